"""Loaded with ``-p`` before pytest's entry-point plugins (pytest-grpc imports
grpc), so in-process test servers run with the production cipher-suite policy."""

from rt_client.tls import configure_grpc_tls

configure_grpc_tls()
