"""The steps of ``scripts/demo.py`` (``make demo``), a module a part of the flow.

``commands`` runs the tools and servers (``Demo``) and prints the headings;
``world`` sets up the registry and the two districts; ``sis`` loads the prior
district from an Aeries export and hands the import back; ``transfer`` is the
request, approval and import; ``check`` compares the rows sent with the rows
imported; ``console`` is ``--console``'s web consoles.
"""
