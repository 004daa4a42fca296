"""The transport ceiling: raw gRPC client streaming over the districts' own mutual TLS.

A server subprocess presents district A's certificate and requires a client
certificate (the same credentials, cipher restriction and server options as
the peer listener); the benchmark streams 1 MiB frames of bytes to it with
district B's certificate. No protobuf, no crypto beyond TLS, no database:
the fastest any delivery over this link could go.

    python -m scripts.bench.transport serve --data-dir DIR --port PORT
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rt_client.tls import configure_grpc_tls

SERVICE = "rtbench.Transport"
METHOD = f"/{SERVICE}/Stream"
FRAME = 1 << 20


def _identity(data_dir: Path):  # type: ignore[no-untyped-def]
    from rt_client.identity import load_identity

    return load_identity(data_dir)


def serve(data_dir: Path, port: int) -> None:
    configure_grpc_tls()
    from concurrent import futures

    import grpc

    from rt_server.server import SERVER_OPTIONS

    identity = _identity(data_dir)

    def stream(frames: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        total = 0
        for frame in frames:
            total += len(frame)
        return str(total).encode()

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Stream": grpc.stream_unary_rpc_method_handler(stream)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    server.add_secure_port(f"127.0.0.1:{port}", identity.tls.server_credentials())
    server.start()
    print("ready", flush=True)
    done = threading.Event()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    server.stop(1)


def measure(
    data_dir: Path, port: int, server_district: str, megabytes: int, repeats: int
) -> list[float]:
    """MB/s (10^6 bytes) of ``megabytes`` MiB streamed in 1 MiB frames, ``repeats`` times.

    The client is the district in ``data_dir``; the server on ``port`` serves
    district ``server_district``'s certificate.
    """
    import grpc

    from rt_client.peers import KEEPALIVE_OPTIONS
    from rt_client.tls import district_server_name

    identity = _identity(data_dir)
    # The server's district name, checked as a peer checks it.
    options = [
        *KEEPALIVE_OPTIONS,
        ("grpc.ssl_target_name_override", district_server_name(server_district)),
    ]
    channel = grpc.secure_channel(
        f"127.0.0.1:{port}", identity.tls.channel_credentials(), options=options
    )
    call = channel.stream_unary(METHOD)
    frame = bytes(FRAME)

    def frames(n: int) -> Iterator[bytes]:
        for _ in range(n):
            yield frame

    try:
        call(frames(4), timeout=60)  # connect and handshake outside the timing
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            reply = call(frames(megabytes), timeout=600)
            elapsed = time.perf_counter() - started
            assert int(reply) == megabytes * FRAME
            rates.append(megabytes * FRAME / 1e6 / elapsed)
        return rates
    finally:
        channel.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--data-dir", type=Path, required=True)
    s.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.data_dir, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
