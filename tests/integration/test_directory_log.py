"""The verifiable directory log, end to end: real registries, real district servers, real mTLS.

A dishonest registry is simulated by a real fork: the registry's home copied
(same CA, same signing key, same log prefix), served by a second real
registry server, and each copy signs a *different* entry for a third district
C (another HPKE key). District A asks the first copy, district B the second.
At their next peer call they compare checkpoints (gossip in the call's
metadata): both detect the split view, record it in their audit logs, and
the call is refused -- no request reaches A.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from protos.rt.v1 import registrar_pb2
from registry import cli as registry_cli
from registry.entries import EntrySigner
from registry.home import open_registry
from registry.server import start_registry_server
from registry.store import RegistryStore
from rt_client.checkpoint import LOG_ORIGIN, NoteVerifier, open_checkpoint, parse_verifier_key
from rt_client.crypto.hpke import key_id
from rt_client.directory import utc_now, verify_entry
from rt_client.tlog import STATE_FILE
from rt_server.flows.directory_log import SPLIT_VIEW_ACTION
from rt_server.store.schema import AUDIT_LOG, REQUESTS
from tests.harness.flow import RPC_TIMEOUT, add_student, count
from tests.harness.world import NEW, PRIOR_SCHOOL, EnrolledDistrict, Side, World

THIRD = "2222222"


def _forge_entry_for(home: Path, code: str, seed: int) -> None:
    """Sign, as the registry (its own key), a new version of ``code``'s entry: another HPKE key."""
    config, service, keys = open_registry(home)
    store = RegistryStore.open(config.database_url)
    pinned = keys.signing_key.public_key().public_bytes_raw()
    entry = verify_entry(service.lookup(code), pinned, utc_now())
    forged_key = bytes([seed]) * 32
    forged = dataclasses.replace(
        entry,
        version=entry.version + 1,
        hpke_public_key=forged_key,
        hpke_key_id=key_id(entry.hpke_suite, forged_key),
    )
    with store.transaction() as tx:
        EntrySigner(keys.signing_key, timedelta(days=30), utc_now).store(tx, forged)
    store.close()


def _copy_registry(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("registry.db*"))
    with sqlite3.connect(src / "registry.db") as a, sqlite3.connect(dst / "registry.db") as b:
        a.backup(b)


def _audit_rows(side: Side, action: str) -> list[str]:
    with side.engine.connect() as conn:
        rows = conn.execute(sa.select(AUDIT_LOG.c.detail).where(AUDIT_LOG.c.action == action)).all()
    return [r[0] for r in rows]


def test_a_registry_showing_two_districts_different_keys_for_a_third_is_caught_by_both(
    tmp_path: Path,
) -> None:
    world = World.start(tmp_path)
    forks = []
    try:
        pair = world.pair()
        world.enroll(THIRD, "Third Unified")
        # The fork: a second real registry from a copy of the first (same log prefix).
        home2 = tmp_path / "registry-fork"
        _copy_registry(world.registry.home, home2)
        config2, service2, keys2 = open_registry(home2, clock=world.registry.clock)
        fork = start_registry_server(
            config2, service2, keys2.server_tls, listen="127.0.0.1:0", enroll_listen="127.0.0.1:0"
        )
        forks.append(fork)
        # Each copy signs a different key for C: the split view.
        _forge_entry_for(world.registry.home, THIRD, seed=1)
        _forge_entry_for(home2, THIRD, seed=2)
        # B asks the fork.
        b_config = dataclasses.replace(
            pair.b.enrolled.config, registry_address=f"127.0.0.1:{fork.port}"
        )
        pair.b = Side(NEW, pair.b.school, EnrolledDistrict(b_config, pair.b.enrolled.identity))
        pair.start(pair.a)
        pair.start(pair.b)
        add_student(pair.b, "B1")

        try:
            pair.b.rpc.CreateRequest(
                registrar_pb2.CreateRequestRequest(
                    student_local_id="B1", prior_school=PRIOR_SCHOOL, actor="bob"
                ),
                timeout=RPC_TIMEOUT,
            )
        except grpc.RpcError:
            pass  # refused or failed: what matters is below

        # Both districts recorded the split view; A holds no request from B.
        a_seen, b_seen = (
            _audit_rows(pair.a, SPLIT_VIEW_ACTION),
            _audit_rows(pair.b, SPLIT_VIEW_ACTION),
        )
        assert a_seen and "3768338" in a_seen[0], a_seen
        assert b_seen and "1964733" in b_seen[0], b_seen
        assert count(pair.a, REQUESTS) == 0
        # B's request failed for good, saying why and whom to tell.
        with pair.b.engine.connect() as conn:
            status, reason = conn.execute(
                sa.select(REQUESTS.c.status, REQUESTS.c.status_reason)
            ).one()
        assert status == "FAILED" and "split view" in (reason or ""), (status, reason)
        # Each kept its own (verified) checkpoint on disk: different roots, same size.
        a_state = (pair.a.enrolled.config.data_dir / STATE_FILE).read_text()
        b_state = (b_config.data_dir / STATE_FILE).read_text()
        assert a_state != b_state
    finally:
        for fork in forks:
            fork.stop(grace=None)
        world.close()


@pytest.mark.parametrize("restarts", [1])
def test_restart_keeps_the_rollback_floor_and_the_last_checkpoint(
    tmp_path: Path, restarts: int
) -> None:
    world = World.start(tmp_path)
    try:
        pair = world.pair()
        pair.start(pair.a)
        server = pair.a.server
        assert server is not None
        server.district.directory.lookup(NEW)  # type: ignore[union-attr]
        state_path = pair.a.enrolled.config.data_dir / STATE_FILE
        assert oct(state_path.stat().st_mode & 0o777) == "0o600"
        before = server.log.checkpoint
        assert before is not None and server.log.floor(NEW) == 1
        pair.a.stop()
        world.started.remove(pair.a)
        for _ in range(restarts):
            pair.start(pair.a)
        again = pair.a.server
        assert again is not None and again is not server
        # Before any lookup: the floor and the checkpoint came back from disk.
        assert again.log.floor(NEW) == 1
        assert again.log.checkpoint == before
    finally:
        world.close()


def test_a_witness_cosigns_through_the_command_line_and_districts_see_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World.start(tmp_path)
    try:
        world.enroll(THIRD)
        home, pin = str(world.registry.home), world.registry.signing_key_hex
        key, state = tmp_path / "witness.key", tmp_path / "witness.json"
        assert (
            registry_cli.main(["witness", "init", "--name", "county-office", "--key", str(key)])
            == 0
        )
        vkey = capsys.readouterr().out.strip().splitlines()[-1]
        assert oct(key.stat().st_mode & 0o777) == "0o600"

        def round_of_witnessing(from_size: int) -> None:
            assert (
                registry_cli.main(
                    ["--home", home, "log", "checkpoint", "--from-size", str(from_size)]
                )
                == 0
            )
            (tmp_path / "request.json").write_text(capsys.readouterr().out)
            args = ["witness", "cosign", "--key", str(key), "--state", str(state), "--log-key", pin]
            assert registry_cli.main([*args, str(tmp_path / "request.json")]) == 0
            (tmp_path / "cosigned").write_text(capsys.readouterr().out)
            assert (
                registry_cli.main(["--home", home, "log", "cosign", str(tmp_path / "cosigned")])
                == 0
            )
            capsys.readouterr()

        round_of_witnessing(0)
        world.enroll(NEW)  # the log grows; the witness checks consistency from size 1
        round_of_witnessing(1)
        note = world.registry.service.checkpoint(min_cosignatures=1)
        witness = parse_verifier_key(vkey)
        cp = open_checkpoint(note, NoteVerifier(LOG_ORIGIN, world.registry.signing_key), [witness])
        assert cp.size == 2 and cp.signers == {"county-office"}
        # Asked to cosign from a size it did not last cosign: refused, clearly.
        assert registry_cli.main(["--home", home, "log", "checkpoint", "--from-size", "1"]) == 0
        (tmp_path / "request.json").write_text(capsys.readouterr().out)
        args = ["witness", "cosign", "--key", str(key), "--state", str(state), "--log-key", pin]
        assert registry_cli.main([*args, str(tmp_path / "request.json")]) == 1
        assert "--from-size 2" in capsys.readouterr().err
    finally:
        world.close()
