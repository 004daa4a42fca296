"""Migration scripts of the district database, oldest first (``NNNN_what.py``)."""
