"""Migration scripts of the registry database, oldest first (``NNNN_what.py``)."""
