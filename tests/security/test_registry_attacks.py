"""Attacks on the registry and on the directory a district server believes.

Against real servers: the registry's enrollment listener (brute force, and
whether timing tells which part of a guess was wrong), and a real district
server whose registry connection goes through a *lying registry* -- a server
holding the registry's TLS certificate (so the district connects to it) but
not its signing key -- which serves tampered, rolled-back, expired or
misattributed entries.

Covered elsewhere, and not repeated here:
``tests/integration/test_enroll.py`` (lockout after repeated wrong codes, one
answer for every refusal, the lockout ending, an answer signed by another
key), ``tests/integration/test_registry.py`` (``UpdateEntry`` for another
district refused and changing nothing, a rotated-away or revoked certificate
refused by the registry, codes at rest only as salted scrypt hashes), and
``tests/unit/test_directory.py`` (every entry check of ``verify_entry`` and
the client's rollback floor, with fakes).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from protos.rt.v1 import common_pb2, peer_pb2, registry_pb2, registry_pb2_grpc
from registry.home import CA_CERT_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE, init_home, open_registry
from registry.server import start_registry_server
from rt_client.enroll import update_district_entry
from rt_client.identity import generate_keys
from rt_client.tls import server_credentials, server_only_channel
from tests.integration.conftest import EnrolledDistrict
from tests.integration.test_flow import NEW, NEW_SCHOOL, PRIOR, PRIOR_SCHOOL, Pair, Side
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
LOCKOUT = 3


@pytest.fixture
def slow_registry(tmp_path: Path) -> Iterator[tuple[object, str, Callable[..., tuple]]]:
    home = tmp_path / "registry"
    init_home(
        home,
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        scrypt_n=TIMING_SCRYPT_N,
        lockout_threshold=LOCKOUT,
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
    known, locked, used = "1964733", "1111111", "2222222"
    auth = service.add_district(known, "Known", [])
    service.add_district(locked, "Locked", [])
    used_code = service.add_district(used, "Used", [])
    assert attempt(used, used_code)[0] == grpc.StatusCode.OK  # its code is consumed now

    # Brute force: the lock holds, the right code included, with the same answer.
    guesses = [attempt(locked, f"guess-{i:04d}") for i in range(LOCKOUT + 4)]
    assert {(c, d) for c, d, _ in guesses} == {
        (grpc.StatusCode.UNAUTHENTICATED, "enrollment refused")
    }
    row = next(r for r in service.districts_overview() if r.code == locked)
    assert row.locked_until is not None and row.failed_attempts == LOCKOUT + 4
    assert row.status == "pending" and row.version is None

    # Timing: one scrypt per attempt whatever was wrong. Cases interleaved, medians compared.
    cases: dict[str, Callable[[], tuple]] = {
        "wrong code": lambda: attempt(known, "x" * 43),
        "unknown district": lambda: attempt("7777777", "x" * 43),
        "locked district": lambda: attempt(locked, "x" * 43),
        "code already used": lambda: attempt(used, "x" * 43),
        "overlong code": lambda: attempt(known, "x" * 5000),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    answers = set()
    for round_ in range(5):
        for name, run in cases.items():
            if name in ("wrong code", "overlong code"):
                service.rotate_code(known)  # clears the lockout: only the code is wrong
            code, details, seconds = run()
            answers.add((code, details))
            if round_:  # the first round warms up
                times[name].append(seconds)
    assert answers == {(grpc.StatusCode.UNAUTHENTICATED, "enrollment refused")}
    medians = {name: statistics.median(t) for name, t in times.items()}
    assert max(medians.values()) < 1.5 * min(medians.values()), medians
    assert auth  # the district's real code was never tried


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
