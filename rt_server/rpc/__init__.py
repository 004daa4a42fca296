"""The district server's gRPC shell: servicers, the peer gate and the error table.

``auth`` authorizes every ``DistrictPeer`` call before a message is read;
``peer_service`` and ``registrar_service`` translate proto <-> domain and hand
each call to ``rt_server.flows``; ``errors`` maps exceptions to status codes,
in one place. Nothing here touches the database.
"""
