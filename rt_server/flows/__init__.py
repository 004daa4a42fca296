"""The flow: what happens to a request, step by step, on each side (DESIGN.md section 4).

``requester`` (the new district's side), ``responder`` (the prior district's),
``sender`` and ``receiver`` (the encrypted delivery), ``review`` (review and
import), ``messages`` (the request's thread) and ``outbox`` (the delivery
worker that sends what the flow queued). Every flow function takes the
``District`` (``district.py``) and works through ``rt_server.store``, in the
units of work ``rt_server.store.units`` opens; none writes SQL or imports
SQLAlchemy. Every district a peer's message names is checked by one function,
``claims.require_claimed``. The floor above, ``rt_server.rpc``, calls in.
"""
