"""The registry: the central directory of districts, their CA, and enrollment (DESIGN.md section 2).

It issues district TLS certificates, signs directory entries with its Ed25519
key, and never sees student data. Modules: ``ca`` (certificate authority),
``authcode`` (authorization-code hashing), ``store`` (database), ``service``
(the rules and the thin gRPC servicers), ``server`` (the two listeners),
``home`` (the registry directory), ``cli`` (``rt-registry``).

Deliberately imports nothing: ``rt-registry`` must be able to call
``rt_client.tls.configure_grpc_tls()`` before anything imports ``grpc``.
"""
