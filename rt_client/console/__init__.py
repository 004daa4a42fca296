"""``rt console``: the registrar's web console, one more client of the district's Registrar service.

Server-rendered pages (Starlette, Jinja2) over the same Unix socket as the
``rt`` CLI, so there is one path into the district's state. ``staff`` holds
the console's accounts (role, Argon2id password, TOTP), ``web`` its sessions
and security headers, ``app`` who may do what and the routes, ``pages`` the
pages, ``commands`` the ``rt console`` and ``rt staff`` commands.
"""
