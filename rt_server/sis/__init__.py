"""The SIS seam (DESIGN.md section 9): where a district's records come from and where imports go.

A *source* gives the prior district's rows of a student to send: our own
record tables (filled by ``rt sis load`` from an export), or the SIS database
read live. A *sink* takes the rows a registrar imports: our tables, the SIS
database written back, or an export in Aeries' layout or Ed-Fi. The flows ask
the seam and do not know which adapter answers.

Adapters here:

- ``aeries_csv``: reads an Aeries table export (one CSV file per table, header
  row = Aeries column codes) row by row into row dicts, naming every problem
  by file, line and column;
- ``load``: ``load_export``, the bulk load of such an export into our tables,
  in one transaction through ``rt_server.store.sis_load``.

This package sits between the flows and the store (``make lint``): it calls
the store and the core, never the flows or the servicers.
"""
