"""The attacker's world: a real registry, two real district servers, and a third district.

District A (``PRIOR``) holds the records, district B (``NEW``) asks for them,
both running the real ``DistrictServer`` (peer gate, flow, delivery worker)
over real mutual TLS with real SQLite databases. District C is enrolled with
the same registry -- a CA-signed certificate, a signing key, an HPKE key -- but
runs no server: it is the attacker, calling A's or B's ``DistrictPeer``
directly with envelopes and delivery streams it crafts. Forgeries that need a
victim's own keys (a "valid but wrong" transfer) use A's identity the same way.

Every attack test snapshots every table of both databases before and after
(``tests.harness.flow.snapshot``) and asserts they are equal, or
differ only by what the test names as harmless.

The world is the one test world of ``tests.harness`` with an attacker in
it. It is module-scoped (starting servers is most of the cost); a test that
changes the world itself (revocation, key rotation) asks for ``fresh_world``.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from protos.rt.v1 import common_pb2, peer_pb2, peer_pb2_grpc, records_pb2
from rt_client import transfer as rtx
from rt_client.crypto import cobblestone, envelope, hpke, trailer
from rt_client.directory import DirectoryEntry, verify_entry
from rt_client.framing import delimit
from rt_client.identity import DistrictIdentity
from rt_client.signed_messages import sign_message
from rt_client.tls import TlsIdentity, district_server_name, secure_channel
from tests.harness import world as harness
from tests.harness.flow import Snapshot, add_student, create_request, small_records, snapshot
from tests.harness.world import (
    FAST_RETRY,
    NEW,
    NEW_SCHOOL,
    PRIOR,
    PRIOR_SCHOOL,
    EnrolledDistrict,
    Pair,
    RegistryHandle,
    Side,
    enroll,
    enroll_pair,
    start_registry,
)

ATTACKER = "2222222"
ATTACKER_SCHOOL = "22222220000001"
RPC_TIMEOUT = 10.0
Code = grpc.StatusCode


# --- the world -----------------------------------------------------------------------------------


class World(harness.World):
    """Districts A and B running in this process, and C, the attacker: enrolled, no server."""

    def __init__(
        self, registry: RegistryHandle, pair: Pair, c: EnrolledDistrict, root: Path | None = None
    ) -> None:
        super().__init__(registry, root or registry.home.parent, started=pair.started)
        self.pair = pair
        self.c = c
        self.channels: list[grpc.Channel] = []

    @property
    def a(self) -> Side:
        return self.pair.a

    @property
    def b(self) -> Side:
        return self.pair.b

    def peer(self, target: Side, tls: TlsIdentity) -> peer_pb2_grpc.DistrictPeerStub:
        """``target``'s DistrictPeer, dialled with the TLS identity ``tls`` (as a peer dials it)."""
        assert target.server is not None
        channel = secure_channel(
            f"127.0.0.1:{target.server.peer_port}",
            tls.channel_credentials(),
            district_server_name(target.code),
        )
        self.channels.append(channel)
        return peer_pb2_grpc.DistrictPeerStub(channel)

    def entry(self, code: str) -> DirectoryEntry:
        """A district's current, verified directory entry."""
        return verify_entry(
            self.registry.service.lookup(code), self.registry.signing_key, self.registry.clock()
        )

    def snapshots(self) -> tuple[Snapshot, Snapshot]:
        return snapshot(self.a), snapshot(self.b)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        super().close()


def build_world(folder: Path, **server_config: Any) -> World:
    """A and B (with ``server_config``) started, C enrolled, in a new registry in ``folder``."""
    registry = start_registry(folder / "registry")
    try:
        pair = enroll_pair(registry, folder, **server_config)
        c = enroll(
            registry, folder, ATTACKER, "Mallory Unified", [(ATTACKER_SCHOOL, "Mallory High")]
        )
    except BaseException:
        registry.stop()
        raise
    world = World(registry, pair, c, folder)
    try:
        pair.start(pair.a, retry=FAST_RETRY)
        pair.start(pair.b, retry=FAST_RETRY)
    except BaseException:
        world.close()
        raise
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("world"))
    add_student(w.a, "A1", small_records(1))
    add_student(w.b, "B1")
    yield w
    w.close()


@pytest.fixture
def fresh_world(tmp_path: Path) -> Iterator[World]:
    """A world of its own, for attacks that change the world (revocation, rotation)."""
    w = build_world(tmp_path)
    add_student(w.a, "A1", small_records(1))
    add_student(w.b, "B1")
    yield w
    w.close()


@pytest.fixture
def pending_request(world: World) -> str:
    """A fresh request from B to A, PENDING at both, undecided (A will not deliver it)."""
    return create_request(world.pair)


# --- refusals and state --------------------------------------------------------------------------


def refused(call: Callable[[], Any], code: grpc.StatusCode) -> grpc.RpcError:
    """Run ``call``; it must fail with ``code``. Returns the error."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    assert err.code() == code, f"{err.code()}: {err.details()}"
    return err


def changed_tables(before: Snapshot, after: Snapshot) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


@dataclass
class Unchanged:
    """``with unchanged(world):`` -- both databases must be exactly as they were."""

    world: World
    allow_b: frozenset[str] = frozenset()
    before: tuple[Snapshot, Snapshot] | None = None

    def __enter__(self) -> Unchanged:
        self.before = self.world.snapshots()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            return
        assert self.before is not None
        after = self.world.snapshots()
        for who, before, now, allowed in (
            ("A", self.before[0], after[0], frozenset()),
            ("B", self.before[1], after[1], self.allow_b),
        ):
            changed = changed_tables(before, now) - allowed
            assert not changed, f"{who}'s database changed: " + "; ".join(
                f"{t}: -{_rows(before, now, t)} +{_rows(now, before, t)}" for t in sorted(changed)
            )


def _rows(one: Snapshot, other: Snapshot, table: str) -> str:
    """Rows of ``table`` in ``one`` and not in ``other``, abbreviated."""
    extra = [r for r in one.get(table, []) if r not in other.get(table, [])]
    return repr([tuple(str(v)[:40] for v in r) for r in extra])[:600]


def unchanged(world: World, *, allow_b: Iterable[str] = ()) -> Unchanged:
    return Unchanged(world, frozenset(allow_b))


# --- crafting ------------------------------------------------------------------------------------


def sign(identity: DistrictIdentity, label: bytes, message: Message) -> common_pb2.SignedEnvelope:
    return sign_message(label, message, identity.code, identity.signing_key)


def records_request(
    *,
    request_id: str,
    requesting: str = NEW,
    requesting_school: str = NEW_SCHOOL,
    prior: str = PRIOR,
    prior_school: str = PRIOR_SCHOOL,
    ssid: str = "1234567890",
    first: str = "Ana",
    last: str = "Nuñez",
    birth: str = "2011-04-02",
    created_offset: timedelta = timedelta(0),
    ttl: timedelta = timedelta(days=30),
    now: Any = None,
) -> peer_pb2.RecordsRequest:
    from rt_client.directory import utc_now

    at = (now or utc_now()) + created_offset
    message = peer_pb2.RecordsRequest(
        request_id=request_id,
        requesting_district=requesting,
        requesting_school=requesting_school,
        prior_district=prior,
        prior_school=prior_school,
        student=peer_pb2.StudentIdentity(
            ssid=ssid,
            legal_first_name=first,
            legal_last_name=last,
            birth_date=birth,
            gender="F",
        ),
        nonce=os.urandom(16),
        requested_by="mallory",
    )
    message.created_at.FromDatetime(at)
    message.expires_at.FromDatetime(at + ttl)
    return message


@dataclass(frozen=True)
class Transfer:
    """A sealed transfer as the wire carries it, with everything needed to tamper with it."""

    header: common_pb2.SignedEnvelope
    wrapped_key: bytes
    ciphertext: bytes
    trailer: bytes
    header_message: records_pb2.TransferHeader

    def frames(
        self,
        *,
        frame_bytes: int = 64 * 1024,
        pieces: Sequence[bytes] | None = None,
        with_trailer: bool = True,
        offset: int = 0,
    ) -> list[peer_pb2.DeliveryFrame]:
        start = peer_pb2.DeliveryFrame(
            start=peer_pb2.DeliveryStart(
                header=self.header, wrapped_key=self.wrapped_key, offset=offset
            )
        )
        if pieces is None:
            data = self.ciphertext[offset:]
            pieces = [data[i : i + frame_bytes] for i in range(0, len(data), frame_bytes)]
        out = [start, *(peer_pb2.DeliveryFrame(ciphertext=p) for p in pieces)]
        if with_trailer:
            out.append(
                peer_pb2.DeliveryFrame(trailer=peer_pb2.TransferTrailer(signature=self.trailer))
            )
        return out


def transfer_header(
    *,
    transfer_id: str,
    request_id: str,
    sender: str,
    receiver: DirectoryEntry,
    tables: dict[int, int],
    plaintext_bytes: int,
) -> records_pb2.TransferHeader:
    header = records_pb2.TransferHeader(
        format_version=rtx.FORMAT_VERSION,
        transfer_id=transfer_id,
        request_id=request_id,
        sender_district=sender,
        receiver_district=receiver.district_code,
        receiver_key_id=receiver.hpke_key_id,
        hpke_kem=receiver.hpke_kem,
        hpke_kdf=receiver.hpke_kdf,
        hpke_aead=receiver.hpke_aead,
        payload_suite=rtx.PAYLOAD_SUITE,
        tables=[common_pb2.TableCount(table=t, rows=n) for t, n in sorted(tables.items())],
        plaintext_bytes=plaintext_bytes,
        ciphertext_bytes=rtx.ciphertext_length(plaintext_bytes),
    )
    header.created_at.GetCurrentTime()
    return header


def forge_transfer(
    *,
    plaintext: bytes,
    header: records_pb2.TransferHeader,
    signer: DistrictIdentity,
    receiver: DirectoryEntry,
    signer_code: str | None = None,
) -> Transfer:
    """Encrypt ``plaintext`` exactly as a sender would, under a header of our choosing.

    This is what a sender holding valid keys can produce: every signature and
    every tag verifies; only the content is what the attack needs.
    """
    body = header.SerializeToString(deterministic=True)
    digest = trailer.header_digest(body)
    suite = hpke.suite_from_names(receiver.hpke_kem, receiver.hpke_kdf, receiver.hpke_aead)
    key = os.urandom(32)
    wrapped = hpke.wrap_key(
        key, hpke.HpkePublicKey.from_bytes(suite, receiver.hpke_public_key), digest
    )
    signed = common_pb2.SignedEnvelope(
        body=body,
        signer_district=signer_code or signer.code,
        signature=envelope.sign_body(envelope.LABEL_TRANSFER_HEADER, body, signer.signing_key)
        if header.format_version == rtx.FORMAT_VERSION_V1
        else rtx.sign_start(body, wrapped, signer.signing_key),
    )
    encryptor = cobblestone.CobblestoneEncryptor(key, digest)
    ciphertext = encryptor.header() + encryptor.update(plaintext) + encryptor.finalize()
    sha = trailer_sha512(ciphertext)
    return Transfer(
        header=signed,
        wrapped_key=wrapped,
        ciphertext=ciphertext,
        trailer=trailer.sign_trailer(digest, wrapped, sha, signer.signing_key),
        header_message=header,
    )


def trailer_sha512(ciphertext: bytes) -> bytes:
    import hashlib

    return hashlib.sha512(ciphertext).digest()


def resign_trailer(t: Transfer, signer: DistrictIdentity, **changes: Any) -> Transfer:
    """``t`` with some of its bytes replaced and the trailer signed again over them by ``signer``.

    What a sender with valid keys could send: the signature verifies, the
    content underneath is whatever the attack made it.
    """
    wrapped = changes.get("wrapped_key", t.wrapped_key)
    ciphertext = changes.get("ciphertext", t.ciphertext)
    digest = trailer.header_digest(t.header.body)
    signature = trailer.sign_trailer(
        digest, wrapped, trailer_sha512(ciphertext), signer.signing_key
    )
    return Transfer(t.header, wrapped, ciphertext, signature, t.header_message)


def seal_valid(
    world: World,
    request_id: str,
    transfer_id: str,
    batches: Sequence[records_pb2.RecordBatch],
    *,
    sender: DistrictIdentity | None = None,
    receiver: str = NEW,
    format_version: int = rtx.FORMAT_VERSION,
) -> Transfer:
    """A genuine transfer, sealed by ``sender`` (default A) with the real ``seal_transfer``.

    ``format_version=1``: as a sender of the previous release sealed it.
    """
    identity = sender or world.a.enrolled.identity
    out = io.BytesIO()
    sealed = rtx.seal_transfer(
        batches=lambda: batches,
        transfer_id=transfer_id,
        request_id=request_id,
        sender=identity.code,
        receiver=world.entry(receiver),
        signing_key=identity.signing_key,
        out=out,
        created_at=world.registry.clock(),
        format_version=format_version,
    )
    header = records_pb2.TransferHeader.FromString(sealed.header.body)
    return Transfer(
        sealed.header, sealed.wrapped_key, out.getvalue(), sealed.trailer_signature, header
    )


def plaintext_of(batches: Iterable[records_pb2.RecordBatch]) -> bytes:
    return b"".join(delimit(b) for b in batches)


def quiet_grpc_logs() -> None:
    logging.getLogger("grpc").setLevel(logging.ERROR)
