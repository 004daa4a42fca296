"""A dishonest or broken registry log is refused, and nothing the district trusts changes.

A real registry (real mTLS) and a district's real ``LogVerifier`` and
``DirectoryClient`` with its state file. The registry's database is then
changed behind its back, as a registry operator rewriting history would:
each attack must be refused with the expected error, and the district's
state (the file on disk, the checkpoint, the rollback floor) must be exactly
what it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos.rt.v1 import common_pb2, peer_pb2, peer_pb2_grpc
from registry import cli as registry_cli
from registry.home import open_registry
from registry.store import entries, log_checkpoints, log_head, log_leaves, log_nodes
from registry.witness import WitnessRequest, cosign
from rt_client import merkle
from rt_client.checkpoint import (
    COSIGNATURE_V1,
    LOG_ORIGIN,
    MAX_NOTE_SIZE,
    Checkpoint,
    NoteVerifier,
    add_signature,
    open_checkpoint,
    open_note,
    sign_note,
    verifier_key,
)
from rt_client.directory import DirectoryClient, RegistryLogFetcher, registry_channel
from rt_client.errors import DirectoryError, IntegrityError
from rt_client.tlog import GOSSIP_KEY, GossipClientInterceptor, LogVerifier, SplitView
from tests.harness.world import World

A, C, D = "1964733", "2222222", "3768338"


@dataclass
class Scene:
    world: World
    directory: DirectoryClient
    log: LogVerifier
    fetcher: RegistryLogFetcher
    state: Path
    channel: grpc.Channel

    def registry_db(self) -> sa.Engine:
        return sa.create_engine(self.world.registry.database_url)

    def snapshot(self) -> tuple[bytes, object, int | None]:
        return self.state.read_bytes(), self.log.checkpoint, self.log.floor(C)

    def body(self, code: str) -> bytes:
        return bytes(self.world.registry.service.lookup(code).body)

    def lookup_again(self, code: str = C) -> None:
        self.directory.forget(code)
        self.directory.lookup(code)


def _verifier(
    scene_world: World, fetcher: RegistryLogFetcher, state: Path, **kw: object
) -> LogVerifier:
    key = NoteVerifier(LOG_ORIGIN, scene_world.registry.signing_key)
    return LogVerifier(fetcher, key, state_path=state, **kw)  # type: ignore[arg-type]


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    world = World.start(tmp_path)
    a = world.enroll(A)
    world.enroll(C)
    channel = registry_channel(world.registry.address, a.identity.tls)
    fetcher = RegistryLogFetcher(channel, timeout=5.0)
    state = tmp_path / "directory-log.json"
    log = _verifier(world, fetcher, state)
    directory = DirectoryClient.for_registry(
        channel, world.registry.signing_key, clock=world.registry.clock, log=log
    )
    directory.lookup(C)  # trusted state: the checkpoint of size 2, C at version 1
    try:
        yield Scene(world, directory, log, fetcher, state, channel)
    finally:
        channel.close()
        world.close()


def _rewrite_leaf(engine: sa.Engine, index: int) -> None:
    """Replace one leaf and forget the checkpoints: the registry signs a rewritten history.

    It rewrites consistently: the stored subtree hashes above the leaf are recomputed too.
    """
    with engine.begin() as conn:
        conn.execute(
            log_leaves.update()
            .where(log_leaves.c.leaf_index == index)
            .values(leaf_hash=os.urandom(32))
        )
        conn.execute(log_checkpoints.delete())
        conn.execute(log_nodes.delete())
        row = [
            bytes(h)
            for (h,) in conn.execute(
                sa.select(log_leaves.c.leaf_hash).order_by(log_leaves.c.leaf_index)
            )
        ]
        level = 0
        while len(row) > 1:
            row = [merkle.node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
            level += 1
            conn.execute(
                log_nodes.insert(),
                [{"level": level, "node_index": i, "node_hash": h} for i, h in enumerate(row)],
            )


def test_a_rewritten_log_is_refused_and_nothing_changes(scene: Scene) -> None:
    before = scene.snapshot()
    _rewrite_leaf(scene.registry_db(), 0)
    with pytest.raises(SplitView):
        scene.lookup_again()
    assert scene.snapshot() == before


def test_a_truncated_log_is_refused_and_nothing_changes(scene: Scene) -> None:
    before = scene.snapshot()
    with scene.registry_db().begin() as conn:
        conn.execute(log_leaves.delete().where(log_leaves.c.leaf_index == 1))
        conn.execute(log_head.update().values(tree_size=1))
        conn.execute(log_checkpoints.delete())
    with pytest.raises(DirectoryError, match="stale checkpoint"):
        scene.lookup_again()
    assert scene.snapshot() == before


def test_a_checkpoint_that_does_not_extend_the_last_is_refused(scene: Scene) -> None:
    before = scene.snapshot()
    _rewrite_leaf(scene.registry_db(), 0)
    scene.world.enroll(D)  # the log grows on top of the rewritten history
    with pytest.raises(SplitView):
        scene.lookup_again()
    assert scene.snapshot() == before


def test_a_stale_checkpoint_is_refused(scene: Scene) -> None:
    old_note = scene.fetcher.checkpoint(0)
    scene.world.enroll(D)
    scene.lookup_again(D)  # the district now trusts the newer checkpoint
    before = scene.snapshot()

    class Replaying(RegistryLogFetcher):
        """The registry answering from an old replica: a real, validly signed, older checkpoint."""

        def checkpoint(self, min_cosignatures: int) -> bytes:
            return old_note

    # The district restarted (its state read back from disk) and meets the old replica.
    restarted = _verifier(scene.world, Replaying(scene.channel), scene.state)
    assert restarted.checkpoint == scene.log.checkpoint
    with pytest.raises(DirectoryError, match="stale checkpoint"):
        restarted.accept_entry(C, 1, scene.body(C))
    assert scene.state.read_bytes() == before[0] and restarted.checkpoint == before[1]


def test_a_missing_witness_signature_is_refused_until_the_witnesses_cosign(
    scene: Scene, tmp_path: Path
) -> None:
    w1, w2, stranger = (Ed25519PrivateKey.generate() for _ in range(3))
    witnesses = [  # the witnesses' cosignature/v1 keys (what `witness init` prints)
        NoteVerifier(n, k.public_key().public_bytes_raw(), COSIGNATURE_V1)
        for n, k in (("w1", w1), ("w2", w2))
    ]
    log = LogVerifier(
        scene.fetcher,
        NoteVerifier(LOG_ORIGIN, scene.world.registry.signing_key),
        witnesses=witnesses,
        witnesses_required=2,
        state_path=tmp_path / "strict.json",
    )
    pin = scene.world.registry.signing_key
    service = scene.world.registry.service

    def cosigned_by(name: str, key: Ed25519PrivateKey, note: bytes) -> bytes:
        return cosign(WitnessRequest(note, 0, []), pin, name, key, tmp_path / f"{name}.state")

    # No cosignature at all: the registry has no such checkpoint; refused.
    with pytest.raises(DirectoryError):
        log.accept_entry(C, 1, scene.body(C))
    note = service.checkpoint()
    assert service.add_cosignatures(cosigned_by("w1", w1, note)) == (2, 0)
    service.add_cosignatures(cosigned_by("stranger", stranger, note))
    # Two lines, but only one of the two witnesses this district trusts: refused.
    with pytest.raises(DirectoryError, match="1 of the 2 witness"):
        log.accept_entry(C, 1, scene.body(C))
    assert not (tmp_path / "strict.json").exists() and log.checkpoint is None
    service.add_cosignatures(cosigned_by("w2", w2, note))
    log.accept_entry(C, 1, scene.body(C))
    assert log.checkpoint is not None and log.checkpoint.signers == {"w1", "w2"}


def test_a_witness_refuses_to_cosign_a_rewritten_log(scene: Scene, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    state = tmp_path / "witness.json"
    service = scene.world.registry.service
    pin = scene.world.registry.signing_key
    first = service.checkpoint()
    cosign(WitnessRequest(first, 0, []), pin, "county", key, state)
    before = state.read_bytes()
    size = open_checkpoint(first, NoteVerifier(LOG_ORIGIN, pin)).size
    _rewrite_leaf(scene.registry_db(), 0)
    scene.world.enroll(D)
    forked = service.checkpoint()
    new_size = open_checkpoint(forked, NoteVerifier(LOG_ORIGIN, pin)).size
    request = WitnessRequest(forked, size, service.consistency_proof(size, new_size))
    with pytest.raises(IntegrityError, match="does not extend"):
        cosign(request, pin, "county", key, state)
    assert state.read_bytes() == before


def test_log_verify_finds_a_rewritten_entry_and_a_truncated_log(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(scene.world.registry.home)
    assert registry_cli.main(["--home", home, "log", "verify"]) == 0
    assert "ok: 2 entries" in capsys.readouterr().out
    with scene.registry_db().begin() as conn:
        conn.execute(entries.update().where(entries.c.district_code == A).values(body=b"forged"))
    assert registry_cli.main(["--home", home, "log", "verify"]) == 1
    assert "rewritten after logging" in capsys.readouterr().out
    with scene.registry_db().begin() as conn:
        conn.execute(log_leaves.delete().where(log_leaves.c.leaf_index == 1))
    assert registry_cli.main(["--home", home, "log", "verify"]) == 1
    assert "the log has 1 leaves, its checkpoint says 2" in capsys.readouterr().out


def test_gossip_catches_a_fork_of_another_size_and_adopts_an_honest_peer_ahead(
    scene: Scene,
) -> None:
    _, _, keys = open_registry(scene.world.registry.home)
    seen: list[tuple[str, str]] = []
    log = _verifier(
        scene.world, scene.fetcher, scene.state, on_split_view=lambda *a: seen.append(a)
    )
    ours = log.checkpoint
    assert ours is not None and ours.size == 2
    scene.world.enroll(D)  # the honest log has 3 entries now
    # What the registry showed a peer: size 3, another root (signed with its real key).
    forked = sign_note(Checkpoint.text(LOG_ORIGIN, 3, os.urandom(32)), LOG_ORIGIN, keys.signing_key)
    with pytest.raises(SplitView):
        log.observe_peer(forked, D)
    assert seen and seen[0][0] == D and log.checkpoint == ours
    # A peer a step ahead on the honest log: checked with the registry's proof, and adopted.
    log.observe_peer(scene.world.registry.service.checkpoint(), D)
    assert log.checkpoint is not None and log.checkpoint.size == 3
    # Garbage in the metadata proves nothing and changes nothing.
    log.observe_peer(b"\xff" * 100, D)
    assert log.checkpoint.size == 3


def test_a_flood_of_cosignatures_never_takes_a_checkpoint_past_4_kib(tmp_path: Path) -> None:
    """Forty witnesses with long names cosign, the two districts require last: the note the
    registry serves stays readable (4 KiB, 16 lines), the required witnesses' lines in it."""
    w1, w2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    required = [
        NoteVerifier(n, k.public_key().public_bytes_raw()) for n, k in (("w1", w1), ("w2", w2))
    ]
    world = World.start(tmp_path, witness_keys=[verifier_key(v) for v in required])
    try:
        world.enroll(A)
        service = world.registry.service
        note = service.checkpoint()
        left_out = 0
        for i in range(40):
            name = f"county-office-{i:02d}-" + "x" * 100
            _, left_out = service.add_cosignatures(
                add_signature(note, name, Ed25519PrivateKey.generate())
            )
            stored = service.checkpoint(1)
            assert len(stored) <= MAX_NOTE_SIZE
            open_note(stored, [NoteVerifier(LOG_ORIGIN, world.registry.signing_key)])
        assert left_out > 0
        for name, key in (("w1", w1), ("w2", w2)):
            service.add_cosignatures(add_signature(note, name, key))
        stored = service.checkpoint(2)
        assert len(stored) <= MAX_NOTE_SIZE
        _, signers = open_note(
            stored, [NoteVerifier(LOG_ORIGIN, world.registry.signing_key), *required]
        )
        assert signers == {LOG_ORIGIN, "w1", "w2"}
        channel = registry_channel(world.registry.address, world.enroll(D).identity.tls)
        try:
            log = LogVerifier(
                RegistryLogFetcher(channel, timeout=5.0),
                NoteVerifier(LOG_ORIGIN, world.registry.signing_key),
                witnesses=required,
                witnesses_required=2,
                state_path=tmp_path / "strict.json",
            )
            log.accept_entry(A, 1, bytes(service.lookup(A).body))
            assert log.checkpoint is not None and log.checkpoint.signers == {"w1", "w2"}
        finally:
            channel.close()
    finally:
        world.close()


def test_a_delivery_streams_answer_showing_a_fork_fails_the_delivery(scene: Scene) -> None:
    """The callee of a delivery stream answers with a checkpoint of another root: the sender's
    call (future or blocking, as the delivery worker makes it) raises SplitView."""
    _, _, keys = open_registry(scene.world.registry.home)
    ours = scene.log.checkpoint
    assert ours is not None
    forked = sign_note(
        Checkpoint.text(LOG_ORIGIN, ours.size, os.urandom(32)), LOG_ORIGIN, keys.signing_key
    )
    received: list[int] = []

    class ForkedPeer(peer_pb2_grpc.DistrictPeerServicer):  # type: ignore[misc]
        def DeliverRecords(self, request_iterator, context):  # type: ignore[no-untyped-def]
            context.send_initial_metadata(((GOSSIP_KEY, forked),))
            received.append(sum(1 for _ in request_iterator))
            return common_pb2.SignedEnvelope()

    server = grpc.server(ThreadPoolExecutor(2))
    peer_pb2_grpc.add_DistrictPeerServicer_to_server(ForkedPeer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.intercept_channel(
        grpc.insecure_channel(f"127.0.0.1:{port}"), GossipClientInterceptor(scene.log, D)
    )
    try:
        stub = peer_pb2_grpc.DistrictPeerStub(channel)
        frames = [peer_pb2.DeliveryFrame(ciphertext=b"x"), peer_pb2.DeliveryFrame()]
        with pytest.raises(SplitView):
            stub.DeliverRecords.future(iter(frames), timeout=5).result()
        with pytest.raises(SplitView):
            stub.DeliverRecords(iter(frames), timeout=5)
        assert received == [2, 2] and scene.log.checkpoint == ours
    finally:
        channel.close()
        server.stop(None)
