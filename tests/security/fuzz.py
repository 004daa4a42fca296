"""Fuzz targets for the parsers of untrusted bytes: envelopes, transfer headers, record batches.

Each target takes arbitrary bytes and feeds them to a parser the way a peer's
bytes reach it. The parser may accept the input, or refuse it with the
project's own error (``IntegrityError``, ``InvalidInput``); anything else -- a
``ValueError`` from deep inside protobuf, a ``KeyError``, a hang, a crash -- is
a finding.

Run them with atheris (coverage-guided, libFuzzer) where it is installed, else
with hypothesis::

    python -m tests.security.fuzz --seconds 300          # every target, time split between them
    python -m tests.security.fuzz --target header --seconds 60
    python -m tests.security.fuzz --engine hypothesis --seconds 10

``make fuzz`` runs the first form; ``make test`` a few seconds of it
(``test_parsers.py``). Crashing inputs are written to ``--artifacts``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TARGETS = ("envelope", "header", "batches", "ciphertext")
_SIGNER = "1964733"
_RECEIVER = "3768338"


class _Keys:
    """Fixed keys, made once per process (fuzz targets run millions of times)."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.signing = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
        self.public = self.signing.public_key().public_bytes_raw()


_keys: _Keys | None = None


def _k() -> _Keys:
    global _keys
    if _keys is None:
        _keys = _Keys()
    return _keys


def fuzz_envelope(data: bytes) -> None:
    """A ``SignedEnvelope`` off the wire, opened as a request: as sent, and validly signed."""
    from google.protobuf.message import DecodeError

    from protos.rt.v1 import common_pb2, peer_pb2
    from rt_client.crypto import envelope
    from rt_client.errors import IntegrityError
    from rt_client.signed_messages import open_message

    keys = _k()
    try:
        signed = common_pb2.SignedEnvelope.FromString(data)
    except DecodeError:
        signed = common_pb2.SignedEnvelope(body=data, signer_district=_SIGNER)
    for candidate in (
        signed,
        common_pb2.SignedEnvelope(
            body=signed.body,
            signer_district=_SIGNER,
            signature=envelope.sign_body(envelope.LABEL_REQUEST, signed.body, keys.signing),
        ),
    ):
        try:
            message = open_message(
                envelope.LABEL_REQUEST,
                candidate,
                signer=_SIGNER,
                public_key=keys.public,
                message_type=peer_pb2.RecordsRequest,
            )
        except IntegrityError:
            continue
        assert candidate.signer_district == _SIGNER
        message.SerializeToString()  # what was accepted is a well-formed message


def fuzz_header(data: bytes) -> None:
    """A validly signed transfer header with arbitrary content, checked as B checks it."""
    from protos.rt.v1 import common_pb2
    from rt_client import transfer as rtx
    from rt_client.crypto import envelope
    from rt_client.errors import IntegrityError, InvalidInput

    keys = _k()
    signed = common_pb2.SignedEnvelope(
        body=data,
        signer_district=_SIGNER,
        signature=envelope.sign_body(envelope.LABEL_TRANSFER_HEADER, data, keys.signing),
    )
    try:
        header, digest = rtx.open_header(
            signed,
            sender=_SIGNER,
            sender_signing_key=keys.public,
            receiver=_RECEIVER,
            receiver_key_id="k",
            max_bytes=1 << 30,
        )
    except (IntegrityError, InvalidInput):
        return
    assert header.sender_district == _SIGNER and header.receiver_district == _RECEIVER
    assert header.ciphertext_bytes == rtx.ciphertext_length(header.plaintext_bytes) <= 1 << 30
    tables = [c.table for c in header.tables]
    assert len(tables) == len(set(tables)) and all(0 < t <= 8 for t in tables)
    assert len(digest) == 32


def fuzz_batches(data: bytes) -> None:
    """Decrypted plaintext, cut anywhere, framed into batches and validated row by row."""
    from protos.rt.v1 import common_pb2
    from rt_client.errors import InvalidInput
    from rt_client.framing import read_batches
    from rt_server.core import validate

    cut = data[0] % (len(data) + 1) if data else 0
    pieces = [data[1:cut], data[cut:]] if data else [b""]
    try:
        for batch in read_batches(pieces, max_batch_bytes=1 << 20):
            table, rows = validate.validate_batch(batch)
            assert common_pb2.TableCode.Value(table) == batch.table
            assert len(rows) <= validate.MAX_ROWS_PER_BATCH
    except InvalidInput:
        return


def fuzz_ciphertext(data: bytes) -> None:
    """Cobblestone-256 ciphertext from a peer: it decrypts (it cannot) or fails as one error."""
    from rt_client.crypto import cobblestone
    from rt_client.errors import IntegrityError

    cut = data[0] % (len(data) + 1) if data else 0
    decryptor = cobblestone.CobblestoneDecryptor(b"\x07" * 32, b"context")
    try:
        decryptor.update(data[:cut])
        decryptor.update(data[cut:])
        decryptor.finalize()
    except IntegrityError:
        return
    raise AssertionError("random bytes decrypted")


FUNCTIONS: dict[str, Callable[[bytes], None]] = {
    "envelope": fuzz_envelope,
    "header": fuzz_header,
    "batches": fuzz_batches,
    "ciphertext": fuzz_ciphertext,
}


def atheris_available() -> bool:
    return importlib.util.find_spec("atheris") is not None


def _run_atheris(target: str, seconds: float, artifacts: Path) -> None:
    import atheris

    with atheris.instrument_imports(include=["rt_client", "rt_server"]):
        import rt_client.crypto.cobblestone  # noqa: F401
        import rt_client.framing  # noqa: F401
        import rt_client.signed_messages  # noqa: F401
        import rt_client.transfer  # noqa: F401
        import rt_server.core.validate  # noqa: F401
    function = FUNCTIONS[target]
    args = [
        sys.argv[0],
        f"-max_total_time={max(1, int(seconds))}",
        f"-artifact_prefix={artifacts}{os.sep}{target}-",
        "-rss_limit_mb=4096",
        "-max_len=65536",
        "-print_final_stats=0",
    ]
    atheris.Setup(args, function)
    atheris.Fuzz()  # exits the process when the time is up, or on a finding


def _run_hypothesis(target: str, seconds: float) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    function = FUNCTIONS[target]
    runs = 0

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.binary(max_size=4096))
    def check(data: bytes) -> None:
        function(data)

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        runs += 200
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.security.fuzz", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="total time (default 60)")
    parser.add_argument("--target", choices=TARGETS, help="one target (default: all, in turn)")
    parser.add_argument(
        "--engine",
        choices=("auto", "atheris", "hypothesis"),
        default="auto",
        help="atheris where it is installed (auto), else hypothesis",
    )
    parser.add_argument(
        "--artifacts", type=Path, help="where crashing inputs go (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if atheris_available() else "hypothesis"
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="rt-fuzz-"))
    artifacts.mkdir(parents=True, exist_ok=True)

    if args.target is not None:
        if engine == "atheris":
            _run_atheris(args.target, args.seconds, artifacts)
            return 0
        runs = _run_hypothesis(args.target, args.seconds)
        print(f"{args.target}: {runs} inputs (hypothesis), no finding", flush=True)
        return 0

    share = args.seconds / len(TARGETS)
    if engine == "hypothesis":
        for target in TARGETS:
            runs = _run_hypothesis(target, share)
            print(f"{target}: {runs} inputs (hypothesis), no finding", flush=True)
        print(f"no findings ({engine}, {args.seconds:.0f} s)")
        return 0
    # Every target in a process of its own: libFuzzer runs once per process.
    failed = []
    for target in TARGETS:
        cmd = [
            sys.executable,
            "-m",
            "tests.security.fuzz",
            "--target",
            target,
            "--seconds",
            str(share),
            "--engine",
            engine,
            "--artifacts",
            str(artifacts),
        ]
        print(f"fuzzing {target} with {engine} for {share:.0f} s", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            result = subprocess.run(cmd, timeout=share + 120)
            if result.returncode != 0:
                failed.append(target)
    if failed:
        print(f"findings in {', '.join(failed)}; inputs in {artifacts}", file=sys.stderr)
        return 1
    print(f"no findings ({engine}, {args.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
