"""Attacks on the registry and on the directory a district server believes.

Against real servers: the registry's enrollment listener (brute force, and
whether timing tells which part of a guess was wrong), the enrollment lockout
at the service level with two sources and a clock (an outsider's wrong codes
never keep the district's own operator out; a locked source's attempts are
not counted, do not extend its lock and change nothing), and a real district
server whose registry connection goes through a *lying registry* -- a server
holding the registry's TLS certificate (so the district connects to it) but
not its signing key -- which serves tampered, rolled-back, expired or
misattributed entries.

Covered elsewhere, and not repeated here:
``tests/integration/test_enroll.py`` (lockout of the real client address after
repeated wrong codes, one answer for every refusal, the lockout ending, an
answer signed by another key), ``tests/unit/test_enrollment_limiter.py`` (the
limiter alone: back-off, bounded memory, IPv6 /64),
``tests/integration/test_registry.py`` (``UpdateEntry`` for another
district refused and changing nothing, a rotated-away or revoked certificate
refused by the registry, codes at rest only as salted scrypt hashes), and
``tests/unit/test_directory.py`` (every entry check of ``verify_entry`` and
the client's rollback floor, with fakes).
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos.rt.v1 import common_pb2, peer_pb2, registry_pb2, registry_pb2_grpc
from registry.ca import RegistryCA
from registry.home import CA_CERT_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE, init_home, open_registry
from registry.server import start_registry_server
from registry.service import DistrictSummary, EnrollResult, KeySubmission, RegistryService
from registry.store import RegistryStore
from rt_client.config import RegistryConfig
from rt_client.errors import EnrollmentRefused
from rt_client.identity import generate_keys
from rt_client.rotation import update_district_entry
from rt_client.tls import server_credentials, server_only_channel
from tests.harness.world import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL, EnrolledDistrict, Pair, Side
from tests.security.conftest import (
    ATTACKER,
    ATTACKER_SCHOOL,
    FAST_RETRY,
    RPC_TIMEOUT,
    Code,
    World,
    enroll,
    refused,
    start_registry,
    unchanged,
)

# --- authorization-code brute force, and timing --------------------------------------------------

TIMING_SCRYPT_N = 2**11  # cheap: a difference in the rest of the work shows, not drowned in it
# Every attempt of this test comes from 127.0.0.1: one source. Five rounds of the timing
# cases stay below the lockout at any one district, and all of it below the source's.
LOCKOUT = 6
SOURCE_LOCKOUT = 100


@pytest.fixture
def slow_registry(tmp_path: Path) -> Iterator[tuple[object, str, Callable[..., tuple]]]:
    home = tmp_path / "registry"
    init_home(
        home,
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        scrypt_n=TIMING_SCRYPT_N,
        lockout_threshold=LOCKOUT,
        lockout_source_threshold=SOURCE_LOCKOUT,
    )
    _config, service, keys = open_registry(home)
    running = start_registry_server(_config, service, keys.server_tls)
    channel = server_only_channel(
        f"127.0.0.1:{running.enroll_port}", (home / CA_CERT_FILE).read_bytes()
    )
    stub = registry_pb2_grpc.RegistryStub(channel)

    def attempt(code: str, auth_code: str) -> tuple[grpc.StatusCode, str, float]:
        keys = generate_keys(code, ["127.0.0.1:7401"]).to_proto()
        request = registry_pb2.EnrollRequest(
            district_code=code, authorization_code=auth_code, keys=keys
        )
        started = time.perf_counter()
        try:
            stub.Enroll(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            return exc.code(), exc.details(), time.perf_counter() - started
        return grpc.StatusCode.OK, "", time.perf_counter() - started

    try:
        yield service, str(home), attempt
    finally:
        channel.close()
        running.stop(grace=None)


def test_brute_force_is_locked_out_and_timing_does_not_tell_which_part_was_wrong(
    slow_registry,
) -> None:
    service, _home, attempt = slow_registry
    known, other, locked, used = "1964733", "3768338", "1111111", "2222222"
    auth = service.add_district(known, "Known", [])
    other_auth = service.add_district(other, "Other", [])
    locked_auth = service.add_district(locked, "Locked", [])
    used_code = service.add_district(used, "Used", [])
    assert attempt(used, used_code)[0] == grpc.StatusCode.OK  # its code is consumed now

    # Brute force: the source is locked out, the right code included, with the same answer;
    # attempts while locked are not counted.
    guesses = [attempt(locked, f"guess-{i:04d}") for i in range(LOCKOUT + 4)]
    guesses.append(attempt(locked, locked_auth))
    assert {(c, d) for c, d, _ in guesses} == {
        (grpc.StatusCode.UNAUTHENTICATED, "enrollment refused")
    }
    row = next(r for r in service.districts_overview() if r.code == locked)
    assert row.last_lockout_at is not None and row.failed_attempts == LOCKOUT
    assert row.status == "pending" and row.version is None and row.code_outstanding

    # Timing: one scrypt per attempt whatever was wrong. Cases interleaved, medians compared.
    # (Two known districts, so that neither reaches the lockout: "wrong code" stays that.)
    cases: dict[str, Callable[[], tuple]] = {
        "wrong code": lambda: attempt(known, "x" * 43),
        "unknown district": lambda: attempt("7777777", "x" * 43),
        "locked source": lambda: attempt(locked, "x" * 43),
        "code already used": lambda: attempt(used, "x" * 43),
        "overlong code": lambda: attempt(other, "x" * 5000),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    answers = set()
    for round_ in range(5):
        for name, run in cases.items():
            code, details, seconds = run()
            answers.add((code, details))
            if round_:  # the first round warms up
                times[name].append(seconds)
    assert answers == {(grpc.StatusCode.UNAUTHENTICATED, "enrollment refused")}
    medians = {name: statistics.median(t) for name, t in times.items()}
    assert max(medians.values()) < 1.5 * min(medians.values()), medians
    overview = {r.code: r for r in service.districts_overview()}
    assert (overview[known].failed_attempts, overview[other].failed_attempts) == (5, 5)
    assert overview[known].last_lockout_at is None  # below the lockout, as meant
    assert auth and other_auth  # the districts' real codes were never tried


# --- the lockout, at the service level: two sources and a clock -----------------------------------

OPERATOR = "203.0.113.20"  # the district's own IT staff
OUTSIDER = "198.51.100.66"  # anyone else who knows the (public) district code
DISTRICT = "1964733"
THRESHOLD, LOCK_SECONDS = 5, 60


class Clocks:
    """The registry's wall clock and its monotonic clock, moved together."""

    def __init__(self) -> None:
        self.wall = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
        self.ticks = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.ticks

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.ticks += seconds


@dataclasses.dataclass
class LockoutRig:
    service: RegistryService
    store: RegistryStore
    clocks: Clocks
    keys: KeySubmission

    def enroll(self, auth_code: str, source: str) -> EnrollResult:
        return self.service.enroll(DISTRICT, auth_code, self.keys, source=source)

    def refused(self, auth_code: str, source: str) -> None:
        with pytest.raises(EnrollmentRefused) as info:
            self.enroll(auth_code, source)
        assert str(info.value) == "enrollment refused"

    def district(self) -> DistrictSummary:
        return next(r for r in self.service.districts_overview() if r.code == DISTRICT)

    def database(self) -> dict[str, list[tuple]]:
        """Every row of every table of the registry database."""
        tables = sa.MetaData()
        tables.reflect(self.store.engine)
        with self.store.engine.connect() as conn:
            return {
                name: sorted(tuple(r) for r in conn.execute(sa.select(table)))
                for name, table in tables.tables.items()
            }


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[LockoutRig]:
    clocks = Clocks()
    config = RegistryConfig(
        data_dir=tmp_path,
        scrypt_n=16,
        lockout_threshold=THRESHOLD,
        lockout_seconds=LOCK_SECONDS,
        lockout_source_threshold=20,
        lockout_max_seconds=3600,
    )
    store = RegistryStore.open(config.database_url)
    service = RegistryService(
        store,
        RegistryCA.create(now=clocks.wall),
        Ed25519PrivateKey.generate(),
        config,
        clock=clocks.now,
        monotonic=clocks.monotonic,
    )
    keys = KeySubmission.from_proto(generate_keys(DISTRICT, ["127.0.0.1:7401"]).to_proto())
    try:
        yield LockoutRig(service, store, clocks, keys)
    finally:
        store.close()


def test_an_outsiders_wrong_codes_never_keep_the_operator_out(rig: LockoutRig) -> None:
    auth = rig.service.add_district(DISTRICT, "LAUSD", [])
    # 50 wrong codes from the outsider, one every 10 s; half-way, the operator enrolls.
    for i in range(25):
        rig.refused(f"guess-{i}", OUTSIDER)
        rig.clocks.advance(10)
    assert rig.district().last_lockout_at is not None  # the outsider was locked out
    assert rig.enroll(auth, OPERATOR).certificate_pem  # ... and the operator was not
    assert rig.district().status == "active"

    # Later: a re-enrollment, the outsider at it again, and the operator after its lock window.
    auth = rig.service.rotate_code(DISTRICT)
    for i in range(25, 50):
        rig.refused(f"guess-{i}", OUTSIDER)
        rig.clocks.advance(10)
    rig.refused(auth, OUTSIDER)  # locked out still (its windows grew: 60, 120, 240 s ...)
    rig.clocks.advance(3600)  # past any lock of the outsider's
    assert rig.enroll(auth, OPERATOR).certificate_pem
    assert rig.service.lookup(DISTRICT)  # version 2 of the entry, the operator's keys
    assert rig.district().failed_attempts == 0  # the new code was consumed: count restarts


def test_a_locked_sources_attempts_are_not_counted_and_do_not_extend_its_lock(
    rig: LockoutRig,
) -> None:
    auth = rig.service.add_district(DISTRICT, "LAUSD", [])
    for i in range(THRESHOLD):
        rig.refused(f"guess-{i}", OUTSIDER)
    locked_at = rig.clocks.now()
    assert rig.district().failed_attempts == THRESHOLD
    assert rig.district().last_lockout_at == locked_at
    # Hammering all through its lock: refused, not counted, and the lock ends on time.
    for _ in range(59):
        rig.clocks.advance(1)
        rig.refused("guess-again", OUTSIDER)
    assert rig.district().failed_attempts == THRESHOLD
    assert rig.district().last_lockout_at == locked_at
    rig.clocks.advance(1)  # LOCK_SECONDS after the lockout
    # Its next failures count again; the next lockout is twice as long (bounded back-off).
    for i in range(THRESHOLD):
        rig.refused(f"guess-{i}", OUTSIDER)
    assert rig.district().failed_attempts == 2 * THRESHOLD
    rig.clocks.advance(2 * LOCK_SECONDS - 1)
    rig.refused(auth, OUTSIDER)
    rig.clocks.advance(1)
    assert rig.enroll(auth, OUTSIDER).certificate_pem  # the lock ended when it said


def test_a_locked_source_is_refused_with_the_right_code_and_nothing_changes(
    rig: LockoutRig, caplog: pytest.LogCaptureFixture
) -> None:
    auth = rig.service.add_district(DISTRICT, "LAUSD", [])
    for i in range(THRESHOLD):
        rig.refused(f"guess-{i}", OUTSIDER)
    before = rig.database()
    with caplog.at_level(logging.WARNING, logger="registry.service"):
        rig.refused(auth, OUTSIDER)
    assert rig.database() == before
    assert any(
        f"from {OUTSIDER} refused: the source is locked out" in r.getMessage()
        for r in caplog.records
    )
    assert auth not in caplog.text
    assert rig.enroll(auth, OPERATOR).certificate_pem  # it was the right code


def test_a_scanner_is_locked_out_of_every_district_and_no_district_is(rig: LockoutRig) -> None:
    auth = rig.service.add_district(DISTRICT, "LAUSD", [])
    for i in range(20):  # lockout_source_threshold, over 20 districts, registered or not
        with pytest.raises(EnrollmentRefused):
            rig.service.enroll(f"{i:07d}", "guess", rig.keys, source=OUTSIDER)
    before = rig.database()
    rig.refused(auth, OUTSIDER)  # a district it never tried: locked out of it too
    rig.refused("guess", "198.51.100.67")  # its neighbour has its own count: one wrong ...
    assert rig.district().failed_attempts == 1
    assert rig.database() != before
    assert rig.enroll(auth, OPERATOR).certificate_pem


def test_ipv6_sources_are_counted_by_their_slash_64(rig: LockoutRig) -> None:
    auth = rig.service.add_district(DISTRICT, "LAUSD", [])
    for i in range(THRESHOLD):  # a host that changes its interface identifier every time
        rig.refused(f"guess-{i}", f"2001:db8:6:6::{i + 1:x}")
    rig.refused(auth, "2001:db8:6:6:ffff::1")
    assert rig.enroll(auth, "2001:db8:6:7::1").certificate_pem  # the next /64 over


# --- a lying registry between a district server and the real one ---------------------------------


class LyingRegistry(registry_pb2_grpc.RegistryServicer):
    """Answers like the registry, except for the lookups ``tamper`` rewrites."""

    def __init__(self, service) -> None:
        self.service = service
        self.tamper: Callable[[str, common_pb2.SignedEnvelope], common_pb2.SignedEnvelope] = (
            lambda code, envelope: envelope
        )

    def LookupDistrict(self, request, context):  # noqa: N802
        return self.tamper(request.district_code, self.service.lookup(request.district_code))

    def SearchSchools(self, request, context):  # noqa: N802
        return registry_pb2.SearchSchoolsResponse()

    # The directory log, honestly: these lies are about entries, not about the log
    # (tests/security/test_directory_log_attacks.py lies about the log).
    def GetCheckpoint(self, request, context):  # noqa: N802
        return registry_pb2.LogCheckpoint(note=self.service.checkpoint(request.min_cosignatures))

    def GetInclusionProof(self, request, context):  # noqa: N802
        index, hashes = self.service.inclusion_proof(
            request.district_code, request.version, request.tree_size
        )
        return registry_pb2.InclusionProof(
            leaf_index=index, tree_size=request.tree_size, hashes=hashes
        )

    def GetConsistencyProof(self, request, context):  # noqa: N802
        hashes = self.service.consistency_proof(request.old_size, request.new_size)
        return registry_pb2.ConsistencyProof(hashes=hashes)


TTL = 1


@pytest.fixture
def lied_to(tmp_path: Path) -> Iterator[tuple[World, LyingRegistry]]:
    """A and C as usual; B's server asks a lying registry (B's directory TTL: 1 s)."""
    registry = start_registry(tmp_path / "registry")
    home = registry.home
    liar = LyingRegistry(registry.service)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    registry_pb2_grpc.add_RegistryServicer_to_server(liar, server)
    port = server.add_secure_port(
        "127.0.0.1:0",
        server_credentials(
            (home / SERVER_KEY_FILE).read_bytes(),
            (home / SERVER_CERT_FILE).read_bytes(),
            registry.ca_pem,
        ),
    )
    server.start()
    a = enroll(registry, tmp_path, PRIOR, "Prior", [(PRIOR_SCHOOL, "Lincoln High")])
    b = enroll(
        registry, tmp_path, NEW, "New", [(NEW_SCHOOL, "Roosevelt High")], directory_ttl_seconds=TTL
    )
    b = EnrolledDistrict(
        dataclasses.replace(b.config, registry_address=f"127.0.0.1:{port}"), b.identity
    )
    c = enroll(registry, tmp_path, ATTACKER, "Mallory", [(ATTACKER_SCHOOL, "Mallory High")])
    pair = Pair(Side(PRIOR, PRIOR_SCHOOL, a), Side(NEW, NEW_SCHOOL, b))
    world = World(registry, pair, c)
    try:
        pair.start(pair.a, retry=FAST_RETRY)
        pair.start(pair.b, retry=FAST_RETRY)
        yield world, liar
    finally:
        world.close()
        server.stop(None)


def test_entries_a_lying_registry_serves_are_refused(lied_to) -> None:
    world, liar = lied_to
    registry = world.registry
    c = world.c
    stub = world.peer(world.b, c.identity.tls)

    def call_b() -> peer_pb2.DeliveryOffset:
        return stub.GetDeliveryOffset(
            peer_pb2.DeliveryOffsetRequest(transfer_id="00000000-0000-4000-8000-000000000000"),
            timeout=RPC_TIMEOUT,
        )

    def after_ttl() -> None:
        # As if B's cached entry had aged past its TTL (forget keeps the rollback floor).
        assert world.b.server is not None and world.b.server.district is not None
        world.b.server.district.directory.forget(ATTACKER)  # type: ignore[attr-defined]

    first = registry.service.lookup(ATTACKER)  # version 1, genuine
    call_b()  # B believes version 1

    # A genuinely signed entry that has expired: issued with the registry's clock 10 days back.
    now = registry.clock()
    registry.clock.set(now - timedelta(days=10))
    expired = update_district_entry(
        c.config, endpoints=["127.0.0.1:7999"], clock=registry.clock
    ).entry
    registry.clock.set(now)
    current = registry.service.lookup(ATTACKER)  # re-signed: the newest version
    assert (version(first), version(expired), version(current)) == (1, 2, 3)

    def flipped(envelope: common_pb2.SignedEnvelope) -> common_pb2.SignedEnvelope:
        bad = common_pb2.SignedEnvelope()
        bad.CopyFrom(envelope)
        bad.signature = bytes([bad.signature[0] ^ 1]) + bad.signature[1:]
        return bad

    def another_signer(envelope: common_pb2.SignedEnvelope) -> common_pb2.SignedEnvelope:
        return common_pb2.SignedEnvelope(
            body=envelope.body, signature=envelope.signature, signer_district=PRIOR
        )

    lies: dict[str, Callable[[common_pb2.SignedEnvelope], common_pb2.SignedEnvelope]] = {
        "an expired entry": lambda e: expired,
        "a tampered signature": flipped,
        "a tampered body": lambda e: common_pb2.SignedEnvelope(
            body=e.body.replace(b"Mallory", b"Nallory"),
            signature=e.signature,
            signer_district="registry",
        ),
        "an entry signed as someone else": another_signer,
        "another district's entry": lambda e: registry.service.lookup(PRIOR),
        "garbage": lambda e: common_pb2.SignedEnvelope(
            body=b"\x00\xff", signer_district="registry"
        ),
    }
    liar.tamper = lambda code, e: e  # honest: B sees version 3
    after_ttl()
    call_b()
    for name, lie in lies.items():
        liar.tamper = lambda code, e, lie=lie: lie(e) if code == ATTACKER else e
        after_ttl()
        with unchanged(world):
            assert refused(call_b, Code.PERMISSION_DENIED).details() == "not authorized", name
    # An older entry after a newer one: refused as a rollback (version 1 after 3).
    liar.tamper = lambda code, e: first if code == ATTACKER else e
    after_ttl()
    with unchanged(world):
        refused(call_b, Code.PERMISSION_DENIED)
    # The truth again, and C is served again (the refusals were the lies', not C's).
    liar.tamper = lambda code, e: e
    after_ttl()
    assert call_b().offset == 0


def version(envelope: common_pb2.SignedEnvelope) -> int:
    return common_pb2.DirectoryEntry.FromString(envelope.body).version
