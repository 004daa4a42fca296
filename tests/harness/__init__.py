"""The one test world: a real registry and N real districts, and the helpers to drive them.

- ``world``: ``start_registry`` and ``enroll`` (the only way tests enroll a
  district: the real ``Enroll`` RPC), and ``World``, a registry with its
  districts, run in this process (``World.pair``/``Pair.start``: the real
  ``DistrictServer``) or as real ``rt serve`` subprocesses (``World.process``).
- ``processes``: ``DistrictProcess``, one district as an ``rt serve`` subprocess.
- ``flow``: the flow driven through the registrars' services of in-process
  districts (add a student, request, approve, review, import), and reading
  their databases (``snapshot``, ``rows_of``, ``count``).

``free_port`` and ``wait_for`` come from ``scripts.loopback``, which the
benchmark and the demo share (it cannot live here: scripts do not import tests).
"""

from scripts.loopback import free_port, wait_for

__all__ = ["free_port", "wait_for"]
