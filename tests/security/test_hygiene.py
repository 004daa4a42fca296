"""Hygiene: what the logs, the disk and the registry's database hold; deadlines and load limits.

- No private key, authorization code, SSID or student name appears in any log
  line (any logger, any level, tracebacks included) written during enrollment
  and the full flow, refusals of bad input that carry student data included.
- Key files and database files are mode 0600, data directories 0700.
- The registry's database holds no authorization code -- issued, rotated, used
  or guessed -- in any recoverable form (see also
  ``tests/integration/test_registry.py::test_stored_authorization_codes_are_not_recoverable``).
- Every RPC the package code makes carries a deadline (a check of the source).
- The servers answer calls beyond ``maximum_concurrent_rpcs`` with
  ``RESOURCE_EXHAUSTED`` at once, instead of queueing or hanging.
"""

from __future__ import annotations

import ast
import base64
import json
import logging
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import rt_client
from protos.rt.v1 import (
    common_pb2,
    peer_pb2,
    peer_pb2_grpc,
    records_pb2,
    registrar_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from registry.home import init_home, open_registry
from registry.server import start_registry_server
from registry.service import KeySubmission
from rt_client.crypto import envelope
from rt_client.errors import EnrollmentRefused
from rt_client.identity import HPKE_KEY_FILE, KEY_FILES, generate_keys
from rt_client.tls import REGISTRY_SERVER_NAME, secure_channel
from tests.harness.flow import (
    Status,
    add_student,
    approve,
    create_request,
    import_,
    review,
    small_records,
    wait_status,
)
from tests.harness.world import NEW, PRIOR
from tests.security.conftest import (
    ATTACKER,
    RPC_TIMEOUT,
    Code,
    World,
    build_world,
    enroll,
    forge_transfer,
    plaintext_of,
    records_request,
    refused,
    sign,
    transfer_header,
)

REPO_ROOT = Path(rt_client.__file__).resolve().parent.parent
PACKAGES = ("rt_client", "rt_server", "registry")

SSID = "5550001234"
FIRST, LAST = "Zaphodina", "Beeblebroxñ"


# --- logs ----------------------------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # message, args and any traceback


@pytest.fixture
def captured() -> Iterator[Capture]:
    root = logging.getLogger()
    handler, level = Capture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def secrets_of(data_dir: Path) -> list[str]:
    """Every representation of the district's private keys a log line could carry."""
    out: list[str] = []
    for name in KEY_FILES:
        text = (data_dir / name).read_text()
        if name == HPKE_KEY_FILE:
            raw = base64.b64decode(json.loads(text)["private_key"])
            out += [base64.b64encode(raw).decode()[:40], raw.hex()[:40], repr(raw)[:40]]
        else:
            out += [line for line in text.splitlines() if len(line) >= 40 and "-----" not in line]
    return out


def test_no_key_code_ssid_or_name_in_any_log_line(tmp_path: Path, captured: Capture) -> None:
    world = build_world(tmp_path)  # enrollment of A, B and C is logged too
    try:
        registry = world.registry
        extra_code = registry.add_district("4444444", "Extra", [])
        with pytest.raises(EnrollmentRefused):
            registry.service.enroll(
                "4444444",
                "WRONG-" + extra_code[6:],
                KeySubmission.from_proto(generate_keys("4444444", ["127.0.0.1:7401"]).to_proto()),
                source="192.0.2.1",
            )
        enroll(registry, tmp_path, "5555555", "Fifth", [])
        rotated = registry.service.rotate_code("5555555")

        # The full flow, with a student whose name and SSID are easy to find.
        records = small_records(21)
        records["HIS"][0]["CO"] = f"{LAST} {SSID}"[:60]
        add_student(world.a, "A1", records, ssid=SSID, first=FIRST, last=LAST)
        add_student(world.b, "B1", ssid=SSID, first=FIRST, last=LAST)
        request_id = create_request(world.pair)
        world.a.rpc.MatchStudent(
            __import__("protos.rt.v1.registrar_pb2", fromlist=["x"]).RequestRef(
                request_id=request_id
            ),
            timeout=RPC_TIMEOUT,
        )
        approve(world.pair, request_id)
        review(world.pair, request_id)
        import_(world.pair, request_id)
        wait_status(world.a, request_id, Status.COMPLETE)

        # Refusals of input that carries student data.
        b = world.b.enrolled.identity
        a_from_b = world.peer(world.a, b.tls)
        too_long = records_request(request_id=str(uuid.uuid4()), last=LAST * 6, ssid=SSID)
        refused(
            lambda: a_from_b.SubmitRequest(
                sign(b, envelope.LABEL_REQUEST, too_long), timeout=RPC_TIMEOUT
            ),
            Code.INVALID_ARGUMENT,
        )
        bad_ssid = records_request(request_id=str(uuid.uuid4()), ssid=SSID + "X", last=LAST)
        refused(
            lambda: a_from_b.SubmitRequest(
                sign(b, envelope.LABEL_REQUEST, bad_ssid), timeout=RPC_TIMEOUT
            ),
            Code.INVALID_ARGUMENT,
        )
        pending = create_request(world.pair)
        row = records_pb2.HisRow(co=f"{FIRST} {LAST} {SSID} " * 3, yr="2023-2024")
        batch = records_pb2.RecordBatch(table=common_pb2.HIS, his=[row])
        plaintext = plaintext_of([batch])
        header = transfer_header(
            transfer_id=str(uuid.uuid4()),
            request_id=pending,
            sender=PRIOR,
            receiver=world.entry(NEW),
            tables={common_pb2.HIS: 1},
            plaintext_bytes=len(plaintext),
        )
        t = forge_transfer(
            plaintext=plaintext,
            header=header,
            signer=world.a.enrolled.identity,
            receiver=world.entry(NEW),
        )
        stub = world.peer(world.b, world.a.enrolled.identity.tls)
        refused(
            lambda: stub.DeliverRecords(iter(t.frames()), timeout=RPC_TIMEOUT),
            Code.INVALID_ARGUMENT,
        )

        needles = {
            "SSID": [SSID],
            "first name": [FIRST],
            "last name": [LAST, LAST.encode("utf-8").decode("latin-1"), repr(LAST)[1:-1]],
            "authorization code": [extra_code, extra_code[6:], rotated],
        }
        for side in (world.a.enrolled, world.b.enrolled, world.c):
            needles[f"private key of {side.code}"] = secrets_of(side.config.data_dir)
        for name in ("ca-key.pem", "signing-key.pem", "server-key.pem"):
            needles[f"registry {name}"] = [
                line
                for line in (registry.home / name).read_text().splitlines()
                if len(line) >= 40 and "-----" not in line
            ]
    finally:
        world.close()
    log = "\n".join(captured.lines)
    assert len(captured.lines) > 20, "the flow should have logged something"
    assert "refused" in log  # the refusals above were logged (with their reasons)
    for what, values in needles.items():
        for value in values:
            assert value and value not in log, f"{what} found in the log"


# --- files ---------------------------------------------------------------------------------------


def test_key_files_are_0600_and_data_directories_0700(world: World) -> None:
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    for side in (world.a.enrolled, world.b.enrolled, world.c):
        data_dir = side.config.data_dir
        assert mode(data_dir) == 0o700, data_dir
        for name in KEY_FILES:
            assert mode(data_dir / name) == 0o600, data_dir / name
        for path in data_dir.rglob("*"):
            if path.is_file() and b"PRIVATE KEY" in path.read_bytes()[:4096]:
                assert mode(path) == 0o600, path
    for side in (world.a, world.b):
        assert mode(side.enrolled.config.registrar_socket) == 0o600
        # The database (student records) and its -wal/-shm, too.
        database = sorted(side.enrolled.config.data_dir.glob("district.db*"))
        assert database and {mode(path) for path in database} == {0o600}, database
    home = world.registry.home
    assert mode(home) == 0o700
    for name in ("ca-key.pem", "signing-key.pem", "server-key.pem", "registry.db"):
        assert mode(home / name) == 0o600, name


def test_the_registry_database_holds_no_authorization_code(world: World) -> None:
    registry = world.registry
    issued = registry.add_district("6666666", "Sixth", [])
    rotated = registry.service.rotate_code("6666666")
    guesses = [issued, f"guess-{uuid.uuid4()}", "' OR 1=1; --"]
    keys = KeySubmission.from_proto(generate_keys("6666666", ["127.0.0.1:7401"]).to_proto())
    for guess in guesses:
        with pytest.raises(EnrollmentRefused):
            registry.service.enroll("6666666", guess, keys, source="192.0.2.1")
    registry.service.enroll("6666666", rotated, keys, source="192.0.2.1")  # used: consumed
    db = Path(registry.database_url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        cells = [
            str(c) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"') for c in row
        ]
    finally:
        conn.close()
    for code in [issued, rotated, *guesses]:
        assert code.encode() not in raw
        assert not any(code in cell for cell in cells)
        assert base64.b64encode(code.encode()).decode()[:20] not in "".join(cells)


# --- deadlines -----------------------------------------------------------------------------------


def _rpc_method_names() -> set[str]:
    from grpc_health.v1 import health_pb2

    from protos.rt.v1 import peer_pb2, registrar_pb2, registry_pb2

    names = set()
    for module in (peer_pb2, registrar_pb2, registry_pb2, health_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            names.update(m.name for m in service.methods)
    return names


def test_every_rpc_call_in_the_package_code_has_a_deadline() -> None:
    """Any call ``x.Method(...)`` (or ``x.Method.future(...)``, or
    ``getattr(stub, name)(...)``) of a gRPC method must pass ``timeout=``."""
    methods = _rpc_method_names()
    missing, seen = [], 0
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if "_pb2" in path.name or "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                is_rpc = (
                    (isinstance(func, ast.Attribute) and func.attr in methods)
                    or (
                        isinstance(func, ast.Attribute)
                        and func.attr in ("future", "with_call")
                        and isinstance(func.value, ast.Attribute)
                        and func.value.attr in methods
                    )
                    or (
                        isinstance(func, ast.Call)
                        and isinstance(func.func, ast.Name)
                        and func.func.id == "getattr"
                        and len(func.args) >= 1
                        and "stub" in ast.unparse(func.args[0])
                    )
                )
                if not is_rpc or _is_servicer_call(node):
                    continue
                seen += 1
                if not any(k.arg == "timeout" for k in node.keywords):
                    missing.append(
                        f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {ast.unparse(node)[:80]}"
                    )
    assert seen >= 8, "the check found too few RPC calls: is it still looking at the right code?"
    assert not missing, "RPC calls without a deadline:\n" + "\n".join(missing)


def _is_servicer_call(node: ast.Call) -> bool:
    """``super().Method(request, context)`` and the like: not a client call."""
    return len(node.args) == 2 and ast.unparse(node.args[1]) == "context"


# --- load limits ---------------------------------------------------------------------------------


@pytest.fixture
def small_world(tmp_path: Path) -> Iterator[World]:
    w = build_world(tmp_path, max_concurrent_rpcs=2)
    try:
        yield w
    finally:
        w.close()


def test_a_district_refuses_streams_beyond_its_limit_with_resource_exhausted(
    small_world: World,
) -> None:
    world = small_world
    release = threading.Event()

    def held() -> Iterator[peer_pb2.DeliveryFrame]:
        release.wait(RPC_TIMEOUT)  # a sender that opens a stream and sends nothing
        return
        yield  # pragma: no cover

    a = world.peer(world.b, world.a.enrolled.identity.tls)
    calls = [a.DeliverRecords.future(held(), timeout=RPC_TIMEOUT) for _ in range(2)]
    try:
        time.sleep(0.3)  # both streams are open at B
        c = world.peer(world.b, world.c.identity.tls)
        started = time.monotonic()
        err = refused(
            lambda: c.GetDeliveryOffset(
                peer_pb2.DeliveryOffsetRequest(transfer_id=str(uuid.uuid4())), timeout=RPC_TIMEOUT
            ),
            Code.RESOURCE_EXHAUSTED,
        )
        assert time.monotonic() - started < 2.0  # at once, not after a wait
        assert err.code() == Code.RESOURCE_EXHAUSTED
    finally:
        release.set()
    for call in calls:  # the held streams end (empty: refused), and B is free again
        with pytest.raises(grpc.RpcError):
            call.result(timeout=RPC_TIMEOUT)
    assert (
        c.GetDeliveryOffset(
            peer_pb2.DeliveryOffsetRequest(transfer_id=str(uuid.uuid4())), timeout=RPC_TIMEOUT
        ).offset
        == 0
    )


def test_the_registry_refuses_calls_beyond_its_limit_with_resource_exhausted(
    world: World, tmp_path: Path, monkeypatch
) -> None:
    home = tmp_path / "registry"
    init_home(home, listen="127.0.0.1:0", enroll_listen="127.0.0.1:0", scrypt_n=16)
    config, service, keys = open_registry(home, max_concurrent_rpcs=2)
    running = start_registry_server(config, service, keys.server_tls)
    release, inside = threading.Event(), threading.Semaphore(0)
    lookup = service.lookup

    def slow_lookup(code: str):  # type: ignore[no-untyped-def]
        inside.release()
        release.wait(RPC_TIMEOUT)
        return lookup(code)

    monkeypatch.setattr(service, "lookup", slow_lookup)
    monkeypatch.setattr(service, "authenticate", lambda cert: "1964733")
    # Any registry-CA client certificate reaches the handler (authenticate is stubbed):
    # this is about the listener's limit, not about who may call.
    import datetime as dt

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from registry.ca import RegistryCA
    from registry.home import CA_CERT_FILE, CA_KEY_FILE
    from rt_client.ids import DistrictCode
    from rt_client.tls import channel_credentials

    ca = RegistryCA.from_pem((home / CA_KEY_FILE).read_bytes(), (home / CA_CERT_FILE).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue_district_certificate_for_key(
        key.public_key(), DistrictCode("1964733"), dt.timedelta(days=1)
    )
    creds = channel_credentials(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
        ca.certificate_pem,
    )
    channel = secure_channel(f"127.0.0.1:{running.port}", creds, REGISTRY_SERVER_NAME)
    stub = registry_pb2_grpc.RegistryStub(channel)
    request = registry_pb2.LookupDistrictRequest(district_code="1964733")
    try:
        # A limit of 2 gives each district a share of 1 (a quarter, at least one).
        held = [stub.LookupDistrict.future(request, timeout=RPC_TIMEOUT) for _ in range(1)]
        for _ in held:
            assert inside.acquire(timeout=RPC_TIMEOUT)
        started = time.monotonic()
        refused(lambda: stub.LookupDistrict(request, timeout=RPC_TIMEOUT), Code.RESOURCE_EXHAUSTED)
        assert time.monotonic() - started < 2.0
        release.set()
        for call in held:
            with pytest.raises(grpc.RpcError):  # no such district here: NOT_FOUND, after the wait
                call.result(timeout=RPC_TIMEOUT)
    finally:
        release.set()
        channel.close()
        running.stop(grace=None)
    assert world  # the module's world is not involved; requested for symmetry of fixtures
    _ = (registrar_pb2_grpc, peer_pb2_grpc, ATTACKER)
