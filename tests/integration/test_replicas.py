"""Several replicas of one district (and of the registry) sharing one database.

Every replica serves every call: any replica of the prior district may deliver
any transfer (delivery work is claimed with ``SELECT ... FOR UPDATE SKIP
LOCKED`` under a lease), any replica of the requesting district may receive
any stream (the sender balances over the replicas' endpoints with gRPC's
``round_robin``), and the registrar may use whichever replica's socket.

- ``test_concurrent_transfers_over_two_replicas_each``: 200 transfers at
  once, each district running two in-process replicas; nothing sent twice,
  nothing lost, every row count matches. On SQLite the replicas share one file
  (one host); on PostgreSQL one database.
- ``test_a_replica_killed_mid_delivery``: the prior district runs as two real
  ``rt serve`` processes on PostgreSQL; one is killed with SIGKILL while it
  streams; the other takes its work over, resumes from what the requesting
  district's replicas hold (never re-sealing), and every transfer arrives
  exactly once.
- sealing cut short is redone from scratch; a sealed transfer is never
  encrypted again; a superseded sealing attempt lets go.
- ``round_robin`` reaches every replica, and skips a stopped one.
- ``test_registry_replicas_share_one_database``: two registry servers, one database.

Each test prints its figures (transfers, rows, wall time); ``pytest -s`` shows them.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from protos.rt.v1 import common_pb2, peer_pb2, registrar_pb2, registrar_pb2_grpc
from registry.home import open_registry
from registry.server import start_registry_server
from rt_client.config import write_config
from rt_client.directory import DirectoryClient, registry_channel
from rt_client.errors import PeerUnavailable
from rt_client.peers import PeerClients, call_peer
from rt_server.flows import outbox, receiver, sender
from rt_server.flows.outbox import RetryPolicy
from rt_server.server import DistrictServer
from rt_server.store import make_engine, students
from rt_server.store.schema import (
    AUDIT_LOG,
    DISCLOSURES,
    IMPORT_LEDGER,
    OUTBOX,
    RECORD_TABLES,
    REQUESTS,
    TRANSFER_CHUNKS,
    TRANSFERS,
)
from scripts import samples
from tests.harness import free_port, wait_for
from tests.harness.world import (
    NEW,
    NEW_SCHOOL,
    PRIOR,
    PRIOR_SCHOOL,
    EnrolledDistrict,
    stop_district_server,
)

FAST_RETRY = RetryPolicy(base_seconds=0.05, max_seconds=0.5)
RPC_TIMEOUT = 30.0
Status = common_pb2.RequestStatus


# --- replicas ----------------------------------------------------------------------------------


@dataclass
class Replica:
    server: DistrictServer
    channel: grpc.Channel
    stub: registrar_pb2_grpc.RegistrarStub


@dataclass
class Replicated:
    """One district, several in-process replicas (one per advertised endpoint)."""

    enrolled: EnrolledDistrict
    replicas: list[Replica] = field(default_factory=list)

    @property
    def engine(self) -> Engine:
        district = self.replicas[0].server.district
        assert district is not None
        return district.engine

    def stub(self, i: int) -> registrar_pb2_grpc.RegistrarStub:
        return self.replicas[i % len(self.replicas)].stub


def replica_config(enrolled: EnrolledDistrict, i: int, **changes: Any) -> Any:
    """Replica ``i``'s config: the district's, listening on endpoint ``i`` with its own socket."""
    config = enrolled.config
    return dataclasses.replace(
        config,
        peer_listen=config.advertised_endpoints[i],
        registrar_socket=config.data_dir / f"replica-{i}.sock",
        **changes,
    )


@pytest.fixture
def start_replicas() -> Iterator[Callable[..., Replicated]]:
    started: list[Replica] = []

    def start(enrolled: EnrolledDistrict, count: int | None = None) -> Replicated:
        district = Replicated(enrolled)
        for i in range(count or len(enrolled.config.advertised_endpoints)):
            server = DistrictServer(replica_config(enrolled, i), retry=FAST_RETRY)
            server.start()
            channel = grpc.insecure_channel(f"unix:{server.config.registrar_socket}")
            replica = Replica(server, channel, registrar_pb2_grpc.RegistrarStub(channel))
            district.replicas.append(replica)
            started.append(replica)
        return district

    yield start
    for replica in reversed(started):
        replica.channel.close()
        stop_district_server(replica.server, grace=1)


def two_endpoints() -> list[str]:
    return [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]


# --- seeding and checking -----------------------------------------------------------------------


def seed_students(
    engine: Engine,
    count: int,
    *,
    prefix: str,
    school: str,
    rows_per_table: Mapping[str, int] | None = None,
    seed: int = 20250314,
) -> dict[str, int]:
    """``count`` students (local ids ``prefix`` + number), with records when asked.

    The same ``seed`` gives the same people (names, SSIDs, birth dates) in
    both districts. Records are written by bulk insert: set-up, not what is
    measured. Returns the rows per table written.
    """
    rng = random.Random(seed)
    written: Counter[str] = Counter()
    for i in range(count):
        student = samples.sample_student(rng, i)
        student.update(local_id=f"{prefix}{i:06d}", school=school)
        local_id = students.add_student(engine, student, actor="seed")
        if rows_per_table:
            records = samples.sample_records(rng, rows_per_table)
            with engine.begin() as conn:
                for code, rows in records.items():
                    for row in rows:
                        row.update(PID=local_id, SRC="A")
                    conn.execute(RECORD_TABLES[code].insert(), rows)
                    written[code] += len(rows)
    return dict(written)


def statuses(engine: Engine, direction: str) -> Counter[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(REQUESTS.c.status, func.count())
            .where(REQUESTS.c.direction == direction)
            .group_by(REQUESTS.c.status)
        ).all()
    return Counter({status: n for status, n in rows})


def all_in(engine: Engine, direction: str, status: str, n: int) -> bool:
    return statuses(engine, direction)[status] == n


def audit_counts(engine: Engine, action: str) -> Counter[str]:
    """How many times ``action`` was audited, per request."""
    with engine.connect() as conn:
        ids = conn.execute(select(AUDIT_LOG.c.request_id).where(AUDIT_LOG.c.action == action))
        return Counter(r for (r,) in ids)


def assert_each_once(counts: Counter[str], request_ids: set[str], what: str) -> None:
    assert set(counts) == request_ids, f"{what}: missing or unexpected requests"
    twice = {r: n for r, n in counts.items() if n != 1}
    assert not twice, f"{what} more than once: {twice}"


def ciphertext_digests(engine: Engine, direction: str) -> dict[str, bytes]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(TRANSFERS.c.transfer_id, TRANSFERS.c.ciphertext_sha512).where(
                TRANSFERS.c.direction == direction
            )
        ).all()
    return {t: bytes(d) if d is not None else b"" for t, d in rows}


def count_rows(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


# --- 200 transfers at once ----------------------------------------------------------------------

TRANSFERS_AT_ONCE = 200
LOAD_ROWS = {"HIS": 12, "TST": 10, "ENR": 3, "IMM": 4, "CTS": 1}


@pytest.mark.slow
def test_concurrent_transfers_over_two_replicas_each(
    enrolled_district, start_replicas, databases, monkeypatch
) -> None:
    n = TRANSFERS_AT_ONCE
    a_enrolled = enrolled_district(
        PRIOR, "Prior Unified", [(PRIOR_SCHOOL, "Lincoln High")], endpoints=two_endpoints()
    )
    b_enrolled = enrolled_district(
        NEW, "New Unified", [(NEW_SCHOOL, "Roosevelt High")], endpoints=two_endpoints()
    )
    a, b = start_replicas(a_enrolled), start_replicas(b_enrolled)
    rows_sent = seed_students(
        a.engine, n, prefix="A", school=PRIOR_SCHOOL, rows_per_table=LOAD_ROWS
    )
    seed_students(b.engine, n, prefix="B", school=NEW_SCHOOL)

    # Which replica did the work: A's deliveries and B's receptions, per server.
    servers = {
        id(r.server.district): (side, i) for side in (a, b) for i, r in enumerate(side.replicas)
    }
    worked: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    def counting(real: Callable[..., Any], kind: str) -> Callable[..., Any]:
        def wrapper(d: Any, *args: Any) -> Any:
            side, i = servers[id(d)]
            with lock:
                worked[(kind, i)] += 1
            return real(d, *args)

        return wrapper

    monkeypatch.setattr(sender, "deliver", counting(sender.deliver, "delivered"))
    monkeypatch.setattr(
        receiver, "receive_delivery", counting(receiver.receive_delivery, "received")
    )

    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=16)

    def create(i: int) -> str:
        detail = b.stub(i).CreateRequest(
            registrar_pb2.CreateRequestRequest(
                student_local_id=f"B{i:06d}", prior_school=PRIOR_SCHOOL, actor="bob"
            ),
            timeout=RPC_TIMEOUT,
        )
        return str(detail.summary.request_id)

    request_ids = list(pool.map(create, range(n)))
    assert len(set(request_ids)) == n
    wait_for("A to hold every request", lambda: all_in(a.engine, "INBOUND", "PENDING", n), 120)
    requested = time.monotonic()

    def approve(i: int) -> None:
        a.stub(i + 1).ApproveRequest(
            registrar_pb2.ApproveRequestRequest(
                request_id=request_ids[i], student_local_id=f"A{i:06d}", actor="alice"
            ),
            timeout=RPC_TIMEOUT,
        )

    list(pool.map(approve, range(n)))
    wait_for(
        "B to receive every transfer", lambda: all_in(b.engine, "OUTBOUND", "DATA_RECEIVED", n), 300
    )
    wait_for("A to record every receipt", lambda: all_in(a.engine, "INBOUND", "SENT", n), 120)
    delivered = time.monotonic()

    def import_(i: int) -> registrar_pb2.ImportResult:
        return b.stub(i + 1).ImportTransfer(
            registrar_pb2.ImportTransferRequest(request_id=request_ids[i], actor="bob"),
            timeout=RPC_TIMEOUT,
        )

    results = list(pool.map(import_, range(n)))
    pool.shutdown()
    wait_for("A to hear of every import", lambda: all_in(a.engine, "INBOUND", "COMPLETE", n), 120)
    finished = time.monotonic()

    ids = set(request_ids)
    # Nothing lost: every request went all the way, on both sides.
    assert statuses(a.engine, "INBOUND") == Counter({"COMPLETE": n})
    assert statuses(b.engine, "OUTBOUND") == Counter({"IMPORTED": n})
    # Nothing twice: one SEND, one disclosure, one reception, one import per request.
    assert_each_once(audit_counts(a.engine, "request.send"), ids, "sent")
    assert_each_once(audit_counts(b.engine, "request.receive_data"), ids, "received")
    assert_each_once(audit_counts(b.engine, "request.import"), ids, "imported")
    with a.engine.connect() as conn:
        disclosed = Counter(r for (r,) in conn.execute(select(DISCLOSURES.c.request_id)))
    assert_each_once(disclosed, ids, "disclosed")
    # One sealed transfer per request, received byte for byte; A's spool is gone.
    sent, received = (
        ciphertext_digests(a.engine, "OUTBOUND"),
        ciphertext_digests(b.engine, "INBOUND"),
    )
    assert len(sent) == n and sent == received
    assert count_rows(a.engine, TRANSFER_CHUNKS) == 0
    assert count_rows(a.engine, OUTBOX, OUTBOX.c.status != "DONE") == 0
    assert count_rows(b.engine, OUTBOX, OUTBOX.c.status != "DONE") == 0
    # Every row arrived and was imported once: counts match per table.
    imported: Counter[str] = Counter()
    for result in results:
        for c in result.imported:
            imported[common_pb2.TableCode.Name(c.table)] += c.rows
    assert dict(imported) == rows_sent
    for code, rows in rows_sent.items():
        assert count_rows(b.engine, RECORD_TABLES[code]) == rows
    with b.engine.connect() as conn:  # the ledger's runs cover every incoming row
        ledgered = conn.execute(select(func.sum(IMPORT_LEDGER.c.row_count))).scalar_one()
    assert ledgered == sum(rows_sent.values())
    # Both replicas of A delivered, and both replicas of B received.
    assert worked[("delivered", 0)] and worked[("delivered", 1)], worked
    assert worked[("received", 0)] and worked[("received", 1)], worked

    total_rows = sum(rows_sent.values())
    print(
        f"\n[load {databases.backend}] {n} transfers, {total_rows} rows "
        f"({total_rows // n} per student), 2+2 replicas: requests {requested - started:.1f} s, "
        f"approve->delivered {delivered - requested:.1f} s, import->complete "
        f"{finished - delivered:.1f} s, total {finished - started:.1f} s; work per replica "
        f"{dict(sorted(worked.items()))}"
    )


# --- a replica killed mid-delivery --------------------------------------------------------------

KILL_TRANSFERS = 4
# About 1.8 MiB of ciphertext per student: two ~1 MiB frames per delivery.
KILL_ROWS = {"HIS": 12000, "TST": 12000}
FRAME_DELAY = 0.5  # B stores each frame this much slower, so deliveries are caught mid-stream
LEASE_SECONDS = 2.0


def spawn_replica(config_path: Path, log: Path) -> subprocess.Popen[str]:
    """``rt serve`` as a real process (the entry point configures gRPC's TLS itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rt_client.cli", "serve", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        raise AssertionError(f"replica did not start: {line!r}\n{log.read_text()[-3000:]}")
    return proc


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_replica_killed_mid_delivery(
    enrolled_district, start_replicas, databases, monkeypatch, tmp_path: Path
) -> None:
    if not databases.postgres:
        pytest.skip("replicas in separate processes (hosts) share PostgreSQL, not a SQLite file")
    n = KILL_TRANSFERS
    a_enrolled = enrolled_district(
        PRIOR, "Prior Unified", [(PRIOR_SCHOOL, "Lincoln High")], endpoints=two_endpoints()
    )
    b_enrolled = enrolled_district(
        NEW, "New Unified", [(NEW_SCHOOL, "Roosevelt High")], endpoints=two_endpoints()
    )
    a_engine = make_engine(a_enrolled.config.database_url)
    procs: list[subprocess.Popen[str]] = []
    try:
        rows_sent = seed_students(
            a_engine, n, prefix="A", school=PRIOR_SCHOOL, rows_per_table=KILL_ROWS
        )
        for i in range(2):
            path = a_enrolled.config.data_dir / f"replica-{i}.toml"
            write_config(replica_config(a_enrolled, i, delivery_lease_seconds=LEASE_SECONDS), path)
            procs.append(spawn_replica(path, tmp_path / f"replica-{i}.log"))
        a_stubs = [
            registrar_pb2_grpc.RegistrarStub(
                grpc.insecure_channel(f"unix:{a_enrolled.config.data_dir / f'replica-{i}.sock'}")
            )
            for i in range(2)
        ]

        real_store_frame = receiver._store_frame

        def slow_store_frame(*args: Any) -> None:
            time.sleep(FRAME_DELAY)
            real_store_frame(*args)

        monkeypatch.setattr(receiver, "_store_frame", slow_store_frame)
        b = start_replicas(b_enrolled)
        seed_students(b.engine, n, prefix="B", school=NEW_SCHOOL)
        started = time.monotonic()
        request_ids = []
        for i in range(n):
            detail = b.stub(0).CreateRequest(
                registrar_pb2.CreateRequestRequest(
                    student_local_id=f"B{i:06d}", prior_school=PRIOR_SCHOOL, actor="bob"
                ),
                timeout=RPC_TIMEOUT,
            )
            request_ids.append(detail.summary.request_id)
        wait_for("A to hold every request", lambda: all_in(a_engine, "INBOUND", "PENDING", n), 60)
        for i, request_id in enumerate(request_ids):
            a_stubs[i % 2].ApproveRequest(
                registrar_pb2.ApproveRequestRequest(
                    request_id=request_id, student_local_id=f"A{i:06d}", actor="alice"
                ),
                timeout=RPC_TIMEOUT,
            )

        # Kill a replica while it streams: B holds part of a transfer whose
        # delivery that replica has claimed (whichever replica it is).
        pids = {str(proc.pid): proc for proc in procs}

        def mid_stream() -> tuple[str, subprocess.Popen[str]] | None:
            with a_engine.connect() as conn:
                claimed = dict(
                    conn.execute(
                        select(OUTBOX.c.request_id, OUTBOX.c.claimed_by).where(
                            OUTBOX.c.kind == "delivery",
                            OUTBOX.c.status == "QUEUED",
                            OUTBOX.c.claimed_by.is_not(None),
                        )
                    ).all()
                )
            with b.engine.connect() as conn:
                partial = conn.execute(
                    select(TRANSFERS.c.request_id).where(
                        TRANSFERS.c.state == "RECEIVING",
                        TRANSFERS.c.received_offset > 0,
                        TRANSFERS.c.received_offset < TRANSFERS.c.ciphertext_bytes,
                    )
                ).scalars()
                for request_id in partial:
                    worker = claimed.get(request_id, "")  # "host:pid:server"
                    if worker.split(":")[1:2] and worker.split(":")[1] in pids:
                        return request_id, pids[worker.split(":")[1]]
            return None

        cut, victim = wait_for("a replica to be mid-delivery", mid_stream, 60)
        survivor = next(proc for proc in procs if proc is not victim)
        with a_engine.connect() as conn:
            sealed_before = dict(
                conn.execute(
                    select(TRANSFERS.c.transfer_id, TRANSFERS.c.ciphertext_sha512).where(
                        TRANSFERS.c.state == "SEALED"
                    )
                ).all()
            )
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed = time.monotonic()

        # The other replica finishes every transfer.
        wait_for(
            "B to receive every transfer",
            lambda: all_in(b.engine, "OUTBOUND", "DATA_RECEIVED", n),
            120,
        )
        wait_for("A to record every receipt", lambda: all_in(a_engine, "INBOUND", "SENT", n), 60)
        finished = time.monotonic()
        assert survivor.poll() is None, "the surviving replica stopped"

        ids = set(request_ids)
        assert_each_once(audit_counts(a_engine, "request.send"), ids, "sent")
        assert_each_once(audit_counts(b.engine, "request.receive_data"), ids, "received")
        with a_engine.connect() as conn:
            disclosed = Counter(r for (r,) in conn.execute(select(DISCLOSURES.c.request_id)))
        assert_each_once(disclosed, ids, "disclosed")
        sent, received = (
            ciphertext_digests(a_engine, "OUTBOUND"),
            ciphertext_digests(b.engine, "INBOUND"),
        )
        assert len(sent) == n and sent == received
        # Sealed once: what was SEALED before the kill is what B received.
        for transfer_id, digest in sealed_before.items():
            assert sent[transfer_id] == bytes(digest)
        # The cut transfer resumed where B stood: its frames are stored once each.
        with b.engine.connect() as conn:
            cut_transfer = conn.execute(
                select(TRANSFERS.c.transfer_id, TRANSFERS.c.ciphertext_bytes).where(
                    TRANSFERS.c.request_id == cut
                )
            ).one()
            stored = conn.execute(
                select(func.sum(func.length(TRANSFER_CHUNKS.c.data)), func.count()).where(
                    TRANSFER_CHUNKS.c.transfer_id == cut_transfer.transfer_id
                )
            ).one()
        assert stored[0] == cut_transfer.ciphertext_bytes
        assert count_rows(a_engine, TRANSFER_CHUNKS) == 0
        assert count_rows(a_engine, OUTBOX, OUTBOX.c.status != "DONE") == 0
        # And the records are all there: B reviews every transfer in full.
        reviewed: Counter[str] = Counter()
        for request_id in request_ids:
            review = b.stub(0).ReviewTransfer(
                registrar_pb2.RequestRef(request_id=request_id, actor="bob"), timeout=RPC_TIMEOUT
            )
            for t in review.tables:
                reviewed[common_pb2.TableCode.Name(t.table)] += t.new_rows
        assert dict(reviewed) == rows_sent
        print(
            f"\n[kill {databases.backend}] {n} transfers, {sum(rows_sent.values())} rows, "
            f"{sum(sent_bytes(a_engine).values()) / 2**20:.1f} MiB; a replica killed "
            f"{killed - started:.1f} s in, all delivered {finished - killed:.1f} s later"
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        a_engine.dispose()


def sent_bytes(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                select(TRANSFERS.c.transfer_id, TRANSFERS.c.ciphertext_bytes).where(
                    TRANSFERS.c.direction == "OUTBOUND"
                )
            ).all()
        )


# --- the registry, twice ----------------------------------------------------------------------


def test_registry_replicas_share_one_database(registry, enrolled_district) -> None:
    """A second registry server on the same home and database serves the same directory."""
    _, service, keys = open_registry(registry.home, clock=registry.clock)
    second = start_registry_server(_config_with_port_zero(registry.home), service, keys.server_tls)
    try:
        # Added through the first replica, enrolled through it; looked up through the second.
        a = enrolled_district(PRIOR, "Prior Unified", [(PRIOR_SCHOOL, "Lincoln High")])
        channel = registry_channel(f"127.0.0.1:{second.port}", a.identity.tls)
        try:
            client = DirectoryClient.for_registry(
                channel, registry.signing_key, ttl_seconds=0, clock=registry.clock, timeout=5.0
            )
            entry = client.lookup(PRIOR)
            assert entry.district_code == PRIOR
            schools = client.search_schools("Lincoln", 10)
            assert [s.cds_code for s in schools] == [PRIOR_SCHOOL]
            # A change made through the second replica is what the first one serves.
            service.revoke(PRIOR)
            assert [d.status for d in registry.service.districts_overview()] == ["revoked"]
        finally:
            channel.close()
    finally:
        second.stop(grace=None)


def _config_with_port_zero(home: Path) -> Any:
    from rt_client.config import load_registry_config

    config = load_registry_config(home / "registry.toml")
    return dataclasses.replace(config, listen="127.0.0.1:0", enroll_listen="127.0.0.1:0")


# --- round_robin over the replicas -----------------------------------------------------------


def test_calls_balance_over_replicas_and_skip_a_stopped_one(
    enrolled_district, start_replicas, directory_client, monkeypatch
) -> None:
    a = enrolled_district(PRIOR, "Prior Unified", [(PRIOR_SCHOOL, "Lincoln High")])
    b = start_replicas(
        enrolled_district(
            NEW, "New Unified", [(NEW_SCHOOL, "Roosevelt High")], endpoints=two_endpoints()
        )
    )
    servers = {id(r.server.district): i for i, r in enumerate(b.replicas)}
    served: Counter[int] = Counter()
    real = receiver.delivery_offset

    def counting(d: Any, *args: Any) -> Any:
        served[servers[id(d)]] += 1
        return real(d, *args)

    monkeypatch.setattr(receiver, "delivery_offset", counting)
    peers = PeerClients(a.identity.tls, directory_client(a))
    try:
        stub = peers.stub(NEW)

        def ask() -> None:
            for attempt in range(5):
                try:
                    call_peer(
                        lambda: stub.GetDeliveryOffset(
                            peer_pb2.DeliveryOffsetRequest(transfer_id=str(uuid.uuid4())),
                            timeout=5,
                        )
                    )
                    return
                except PeerUnavailable:
                    if attempt == 4:
                        raise
                    time.sleep(0.2)

        for _ in range(20):
            ask()
        assert served[0] >= 5 and served[1] >= 5, served  # round_robin: both, about evenly

        stop_district_server(b.replicas[1].server, grace=0)
        served.clear()
        for _ in range(10):
            ask()
        assert served == Counter({0: 10})
    finally:
        peers.close()


# --- sealing: crash-safe, and once only ----------------------------------------------------------


class SimulatedCrash(Exception):
    """Stands for the process dying: nothing after it runs, what was committed stays."""


def test_a_seal_cut_short_is_redone_and_a_sealed_transfer_never_encrypted_again(
    enrolled_district, start_replicas, monkeypatch
) -> None:
    a = start_replicas(enrolled_district(PRIOR, "Prior Unified", [(PRIOR_SCHOOL, "Lincoln High")]))
    b = start_replicas(enrolled_district(NEW, "New Unified", [(NEW_SCHOOL, "Roosevelt High")]))
    # About 1.5 MiB of ciphertext: two spool chunks.
    seed_students(a.engine, 1, prefix="A", school=PRIOR_SCHOOL, rows_per_table={"HIS": 20000})
    seed_students(b.engine, 1, prefix="B", school=NEW_SCHOOL)

    seals: list[str] = []
    real_seal_transfer = sender.seal_transfer

    def counting_seal_transfer(**kwargs: Any) -> Any:
        seals.append(kwargs["transfer_id"])
        return real_seal_transfer(**kwargs)

    stored: list[tuple[str, int]] = []
    real_insert = sender.SpoolWriter._insert
    real_store_chunk = sender.SpoolWriter._store_chunk

    def recording_insert(self: sender.SpoolWriter, conn: Any, data: bytes) -> None:
        real_insert(self, conn, data)
        stored.append((self._attempt, self._seq - 1))

    def crashing_store_chunk(self: sender.SpoolWriter, data: bytes) -> None:
        real_store_chunk(self, data)  # committed: the SEALING row and chunk 0 stay behind
        if len(seals) == 1 and self._seq == 1:
            raise SimulatedCrash  # the first attempt dies after its first chunk

    refusals = []
    real_receive = receiver.receive_delivery

    def unavailable_once(d: Any, frames: Any, peer: str) -> Any:
        if not refusals:
            refusals.append(peer)
            raise RuntimeError("B is briefly unwell")  # UNKNOWN: the sender retries
        return real_receive(d, frames, peer)

    monkeypatch.setattr(sender, "seal_transfer", counting_seal_transfer)
    monkeypatch.setattr(sender.SpoolWriter, "_insert", recording_insert)
    monkeypatch.setattr(sender.SpoolWriter, "_store_chunk", crashing_store_chunk)
    monkeypatch.setattr(receiver, "receive_delivery", unavailable_once)

    request_id = (
        b.stub(0)
        .CreateRequest(
            registrar_pb2.CreateRequestRequest(
                student_local_id="B000000", prior_school=PRIOR_SCHOOL, actor="bob"
            ),
            timeout=RPC_TIMEOUT,
        )
        .summary.request_id
    )
    wait_for("A to hold the request", lambda: all_in(a.engine, "INBOUND", "PENDING", 1), 30)
    a.stub(0).ApproveRequest(
        registrar_pb2.ApproveRequestRequest(
            request_id=request_id, student_local_id="A000000", actor="alice"
        ),
        timeout=RPC_TIMEOUT,
    )
    wait_for("B to receive it", lambda: all_in(b.engine, "OUTBOUND", "DATA_RECEIVED", 1), 60)
    wait_for("A to record the receipt", lambda: all_in(a.engine, "INBOUND", "SENT", 1), 30)

    # Sealed twice: once cut short after one chunk, once in full; then never again,
    # though the first delivery of the sealed transfer failed and was retried.
    assert len(seals) == 2 and len(set(seals)) == 1
    attempts = list(dict.fromkeys(attempt for attempt, _ in stored))
    assert len(attempts) == 2
    assert [seq for attempt, seq in stored if attempt == attempts[0]] == [0]
    assert [seq for attempt, seq in stored if attempt == attempts[1]] == [0, 1]
    assert refusals == [PRIOR]
    sent, received = (
        ciphertext_digests(a.engine, "OUTBOUND"),
        ciphertext_digests(b.engine, "INBOUND"),
    )
    assert len(sent) == 1 and sent == received
    assert count_rows(a.engine, TRANSFER_CHUNKS) == 0
    assert_each_once(audit_counts(a.engine, "request.send"), {request_id}, "sent")


def test_a_superseded_seal_stops_and_leaves_the_spool_to_its_successor(
    enrolled_district, start_replicas
) -> None:
    """Two attempts on one transfer (a replica whose lease ran out): the older one lets go."""
    engine_owner = start_replicas(enrolled_district(PRIOR))
    engine = engine_owner.engine
    with engine.begin() as conn:
        conn.execute(
            REQUESTS.insert().values(
                request_id="r", direction="INBOUND", status="PENDING", other_district=NEW,
                requesting_district=NEW, requesting_school=NEW_SCHOOL, prior_district=PRIOR,
                prior_school=PRIOR_SCHOOL, tables_requested="HIS", request_envelope=b"x",
                created_at=dt_now(), updated_at=dt_now(), attempts=0,
                delivery_bytes_total=0, delivery_bytes_done=0,
            )
        )  # fmt: skip
    older = sender.SpoolWriter(engine, "t", "r", chunk_bytes=4, clock=dt_now)
    newer = sender.SpoolWriter(engine, "t", "r", chunk_bytes=4, clock=dt_now)
    older.write(b"abcdefgh")  # its first chunk starts its SEALING row
    newer.write(b"ABCDEFGHIJ")  # its first chunk replaces that row and the chunk
    with pytest.raises(outbox.ClaimLost):
        older.write(b"zzzz")
    with engine.connect() as conn:
        (attempt,) = conn.execute(select(TRANSFERS.c.seal_attempt)).scalars()
        assert attempt == newer._attempt
        data = conn.execute(
            select(TRANSFER_CHUNKS.c.data).order_by(TRANSFER_CHUNKS.c.seq)
        ).scalars()
        assert b"".join(bytes(d) for d in data) == b"ABCDEFGH"


def dt_now() -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC)
