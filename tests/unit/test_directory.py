"""Directory entries: signature before parsing, validity, rollback, revocation, caching, fallback.

Every refusal test also checks that the client's trusted state did not move:
the next good answer is still judged against what was trusted before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos.rt.v1 import common_pb2
from rt_client.crypto.envelope import LABEL_DIRECTORY_ENTRY, LABEL_REQUEST, sign_body
from rt_client.crypto.hpke import DEFAULT_SUITE, HpkePrivateKey, key_id
from rt_client.directory import (
    CLOCK_SKEW,
    DirectoryClient,
    DirectoryEntry,
    DistrictStatus,
    School,
    verify_entry,
)
from rt_client.errors import DirectoryError, PeerUnavailable, RegistryError
from rt_client.ids import DistrictCode, SchoolCode

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CODE = DistrictCode("1964733")


@pytest.fixture(scope="module")
def registry_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def pinned(registry_key: Ed25519PrivateKey) -> bytes:
    return registry_key.public_key().public_bytes_raw()


@pytest.fixture(scope="module")
def base_entry() -> DirectoryEntry:
    hpke_public = HpkePrivateKey.generate(DEFAULT_SUITE).public_key().public_bytes()
    return DirectoryEntry(
        district_code=CODE,
        name="Los Angeles Unified",
        schools=(School(cds_code=SchoolCode("19647331932334"), name="Lincoln High"),),
        endpoints=("rt.lausd.example:7400",),
        tls_spki_sha256=b"\x01" * 32,
        hpke_kem=DEFAULT_SUITE.kem,
        hpke_kdf=DEFAULT_SUITE.kdf,
        hpke_aead=DEFAULT_SUITE.aead,
        hpke_public_key=hpke_public,
        hpke_key_id=key_id(DEFAULT_SUITE, hpke_public),
        signing_public_key=b"\x02" * 32,
        status=DistrictStatus.ACTIVE,
        version=1,
        issued_at=NOW - timedelta(hours=1),
        expires_at=NOW + timedelta(days=7),
    )


def sign(
    entry: DirectoryEntry, key: Ed25519PrivateKey, signer: str = "registry"
) -> common_pb2.SignedEnvelope:
    body = entry.to_proto().SerializeToString(deterministic=True)
    return common_pb2.SignedEnvelope(
        body=body, signer_district=signer, signature=sign_body(LABEL_DIRECTORY_ENTRY, body, key)
    )


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeRegistry:
    """A lookup function whose answer (or failure) the test sets."""

    def __init__(self, answer: common_pb2.SignedEnvelope | None = None) -> None:
        self.answer = answer
        self.unavailable = False
        self.calls = 0
        self.delay = 0.0

    def __call__(self, code: DistrictCode) -> common_pb2.SignedEnvelope:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.unavailable:
            raise PeerUnavailable("registry down")
        assert self.answer is not None
        return self.answer


# -- verify_entry --------------------------------------------------------------


def test_a_correctly_signed_entry_verifies(base_entry, registry_key, pinned) -> None:
    entry = verify_entry(sign(base_entry, registry_key), pinned, NOW, expected_code=CODE)
    assert entry == base_entry
    assert entry.is_active and entry.hpke_suite == DEFAULT_SUITE


def test_a_tampered_entry_is_refused(base_entry, registry_key, pinned) -> None:
    envelope = sign(base_entry, registry_key)
    body = bytearray(envelope.body)
    body[-3] ^= 0x01
    envelope.body = bytes(body)
    with pytest.raises(DirectoryError, match="signature does not verify"):
        verify_entry(envelope, pinned, NOW)


def test_an_entry_signed_by_another_key_is_refused(base_entry, pinned) -> None:
    with pytest.raises(DirectoryError, match="signature does not verify"):
        verify_entry(sign(base_entry, Ed25519PrivateKey.generate()), pinned, NOW)


def test_an_entry_whose_signer_is_not_the_registry_is_refused(
    base_entry, registry_key, pinned
) -> None:
    with pytest.raises(DirectoryError, match="not signed by the registry"):
        verify_entry(sign(base_entry, registry_key, signer=CODE), pinned, NOW)


def test_a_registry_signature_under_another_label_is_refused(
    base_entry, registry_key, pinned
) -> None:
    body = base_entry.to_proto().SerializeToString()
    envelope = common_pb2.SignedEnvelope(
        body=body,
        signer_district="registry",
        signature=sign_body(LABEL_REQUEST, body, registry_key),
    )
    with pytest.raises(DirectoryError):
        verify_entry(envelope, pinned, NOW)


def test_signed_garbage_is_refused_after_the_signature_check(registry_key, pinned) -> None:
    body = b"\xff\xff\xff not a protobuf"
    envelope = common_pb2.SignedEnvelope(
        body=body,
        signer_district="registry",
        signature=sign_body(LABEL_DIRECTORY_ENTRY, body, registry_key),
    )
    with pytest.raises(DirectoryError, match="malformed"):
        verify_entry(envelope, pinned, NOW)


def test_an_unsigned_malformed_body_is_refused_for_its_signature(pinned) -> None:
    # The body is not parsed before the signature verifies.
    envelope = common_pb2.SignedEnvelope(
        body=b"\xff\xff", signer_district="registry", signature=b"\x00" * 64
    )
    with pytest.raises(DirectoryError, match="signature"):
        verify_entry(envelope, pinned, NOW)


def test_an_expired_entry_is_refused(base_entry, registry_key, pinned) -> None:
    envelope = sign(base_entry, registry_key)
    with pytest.raises(DirectoryError, match="expired"):
        verify_entry(envelope, pinned, base_entry.expires_at + CLOCK_SKEW)
    # Within the allowed clock skew it still verifies.
    verify_entry(envelope, pinned, base_entry.expires_at + CLOCK_SKEW - timedelta(seconds=1))


def test_a_not_yet_valid_entry_is_refused(base_entry, registry_key, pinned) -> None:
    envelope = sign(base_entry, registry_key)
    with pytest.raises(DirectoryError, match="not valid yet"):
        verify_entry(envelope, pinned, base_entry.issued_at - CLOCK_SKEW - timedelta(seconds=1))
    verify_entry(envelope, pinned, base_entry.issued_at - CLOCK_SKEW + timedelta(seconds=1))


def test_an_entry_for_another_district_is_refused(base_entry, registry_key, pinned) -> None:
    with pytest.raises(DirectoryError, match="not 1111111"):
        verify_entry(sign(base_entry, registry_key), pinned, NOW, expected_code="1111111")


def test_an_active_entry_without_keys_is_refused(base_entry, registry_key, pinned) -> None:
    for broken in (
        replace(base_entry, tls_spki_sha256=b""),
        replace(base_entry, signing_public_key=b"\x00" * 31),
        replace(base_entry, endpoints=()),
        replace(base_entry, hpke_key_id="00" * 16),
        replace(base_entry, hpke_kem="P256"),
        replace(base_entry, version=0),
        replace(
            base_entry, schools=(School(cds_code=SchoolCode("11111111111111"), name="elsewhere"),)
        ),
    ):
        with pytest.raises(DirectoryError, match="malformed"):
            verify_entry(sign(broken, registry_key), pinned, NOW)


def test_a_revoked_entry_verifies_as_revoked(base_entry, registry_key, pinned) -> None:
    revoked = replace(base_entry, status=DistrictStatus.REVOKED, version=2)
    assert verify_entry(sign(revoked, registry_key), pinned, NOW).status is DistrictStatus.REVOKED


# -- DirectoryClient -------------------------------------------------------------


def client_for(
    fake: FakeRegistry, pinned: bytes, clock: Clock, ttl: float = 300
) -> DirectoryClient:
    return DirectoryClient(fake, pinned, ttl_seconds=ttl, clock=clock)


def test_lookup_caches_for_the_ttl(base_entry, registry_key, pinned) -> None:
    fake, clock = FakeRegistry(sign(base_entry, registry_key)), Clock()
    client = client_for(fake, pinned, clock)
    assert client.lookup(CODE) == base_entry
    clock.advance(299)
    assert client.lookup(CODE) == base_entry
    assert fake.calls == 1
    clock.advance(2)
    client.lookup(CODE)
    assert fake.calls == 2


def test_an_older_version_after_a_newer_one_is_refused(base_entry, registry_key, pinned) -> None:
    v1, v2 = sign(base_entry, registry_key), sign(replace(base_entry, version=2), registry_key)
    fake, clock = FakeRegistry(v2), Clock()
    client = client_for(fake, pinned, clock)
    assert client.lookup(CODE).version == 2
    clock.advance(301)
    fake.answer = v1
    with pytest.raises(DirectoryError, match="older entry"):
        client.lookup(CODE)
    # Still refused on the next fetch: the rollback floor did not move...
    with pytest.raises(DirectoryError, match="older entry"):
        client.lookup(CODE)
    # ...and the version we trusted before is still accepted.
    fake.answer = v2
    assert client.lookup(CODE).version == 2


def test_two_different_entries_with_one_version_are_refused(
    base_entry, registry_key, pinned
) -> None:
    fake, clock = FakeRegistry(sign(base_entry, registry_key)), Clock()
    client = client_for(fake, pinned, clock)
    client.lookup(CODE)
    clock.advance(301)
    fake.answer = sign(replace(base_entry, endpoints=("evil.example:7400",)), registry_key)
    with pytest.raises(DirectoryError, match="same version"):
        client.lookup(CODE)


def test_a_revoked_district_is_refused(base_entry, registry_key, pinned) -> None:
    fake, clock = FakeRegistry(sign(base_entry, registry_key)), Clock()
    client = client_for(fake, pinned, clock)
    client.lookup(CODE)
    clock.advance(301)
    fake.answer = sign(replace(base_entry, version=2, status=DistrictStatus.REVOKED), registry_key)
    with pytest.raises(DirectoryError, match="revoked"):
        client.lookup(CODE)
    # Revocation sticks: the registry going down does not bring back the active entry.
    fake.unavailable = True
    clock.advance(301)
    with pytest.raises(DirectoryError, match="revoked"):
        client.lookup(CODE)


def test_tampered_and_foreign_entries_are_refused_and_change_nothing(
    base_entry, registry_key, pinned
) -> None:
    fake, clock = FakeRegistry(sign(base_entry, registry_key)), Clock()
    client = client_for(fake, pinned, clock)
    client.lookup(CODE)
    clock.advance(301)
    fake.answer = sign(replace(base_entry, version=9), Ed25519PrivateKey.generate())
    with pytest.raises(DirectoryError):
        client.lookup(CODE)
    # The forged version 9 did not raise the rollback floor: version 1 is still fine.
    fake.answer = sign(base_entry, registry_key)
    assert client.lookup(CODE).version == 1


def test_an_unreachable_registry_falls_back_to_a_valid_cached_entry(
    base_entry, registry_key, pinned
) -> None:
    fake, clock = FakeRegistry(sign(base_entry, registry_key)), Clock()
    client = client_for(fake, pinned, clock)
    client.lookup(CODE)
    fake.unavailable = True
    clock.advance(3 * 86400)  # far past the TTL, still within the entry's validity
    assert client.lookup(CODE) == base_entry
    clock.now = base_entry.expires_at  # the cached entry itself has now expired
    with pytest.raises(PeerUnavailable, match="no valid entry"):
        client.lookup(CODE)


def test_an_unreachable_registry_is_asked_again_only_after_a_while(
    base_entry, registry_key, pinned
) -> None:
    # Every peer call looks its peer up: during an outage each lookup must not
    # wait for the registry (a black-holed registry costs a whole timeout).
    fake, clock = FakeRegistry(sign(base_entry, registry_key)), Clock()
    client = client_for(fake, pinned, clock)
    client.lookup(CODE)
    fake.unavailable = True
    clock.advance(3 * 86400)
    assert client.lookup(CODE) == base_entry
    calls = fake.calls
    for _ in range(5):
        clock.advance(1)
        assert client.lookup(CODE) == base_entry
    assert fake.calls == calls
    clock.advance(60)
    assert client.lookup(CODE) == base_entry
    assert fake.calls == calls + 1
    fake.unavailable = False  # back: fetched again on the next retry
    clock.advance(60)
    client.lookup(CODE)
    assert fake.calls == calls + 2


def test_an_unreachable_registry_without_a_cached_entry_is_unavailable(pinned) -> None:
    fake = FakeRegistry()
    fake.unavailable = True
    with pytest.raises(PeerUnavailable):
        client_for(fake, pinned, Clock()).lookup(CODE)


def test_an_expired_entry_from_the_registry_is_refused(base_entry, registry_key, pinned) -> None:
    fake = FakeRegistry(sign(base_entry, registry_key))
    clock = Clock(base_entry.expires_at + timedelta(hours=1))
    with pytest.raises(DirectoryError, match="expired"):
        client_for(fake, pinned, clock).lookup(CODE)


def test_a_malformed_code_is_a_directory_error(pinned) -> None:
    with pytest.raises(DirectoryError, match="not a district code"):
        client_for(FakeRegistry(), pinned, Clock()).lookup("12")


def test_concurrent_lookups_fetch_once(base_entry, registry_key, pinned) -> None:
    fake, clock = FakeRegistry(sign(base_entry, registry_key)), Clock()
    fake.delay = 0.05
    client = client_for(fake, pinned, clock)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: client.lookup(CODE), range(16)))
    assert all(r == base_entry for r in results)
    assert fake.calls == 1


def test_racing_fetches_of_newer_versions_are_not_taken_for_a_rollback(
    base_entry, registry_key, pinned
) -> None:
    # The registry publishes a newer version on every fetch; with a zero TTL
    # every lookup fetches. Fetches of one district are serialized, so a slow
    # fetch of version n can never land after a fetch of version n+1.
    versions = [sign(replace(base_entry, version=v), registry_key) for v in range(1, 41)]
    lock = threading.Lock()
    served = [0]

    def lookup(code: DistrictCode) -> common_pb2.SignedEnvelope:
        with lock:
            served[0] += 1
            answer = versions[served[0] - 1]
        time.sleep(0.001)
        return answer

    client = DirectoryClient(lookup, pinned, ttl_seconds=0, clock=lambda: NOW)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: client.lookup(CODE).version, range(40)))
    assert sorted(results) == list(range(1, 41))


def test_search_needs_a_search_function(pinned) -> None:
    with pytest.raises(RegistryError):
        client_for(FakeRegistry(), pinned, Clock()).search_schools("Lincoln")


def test_the_pinned_key_must_be_an_ed25519_key() -> None:
    from rt_client.errors import InvalidInput

    fake: Callable[[DistrictCode], common_pb2.SignedEnvelope] = FakeRegistry()
    with pytest.raises(InvalidInput):
        DirectoryClient(fake, b"\x00" * 31)
