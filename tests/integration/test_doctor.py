"""``rt doctor`` on a healthy district and on broken ones (issue 17): each problem is named,
with what to do, the command exits 1 on a FAIL, and never shows a traceback. Real registry,
real mTLS, real files; the expired certificate is one the registry issued in the past."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rt_client.identity import KEY_FILES, TLS_KEY_FILE
from rt_client.rotation import rotate_keys
from tests.harness.cli import Rt, rt_runner
from tests.harness.processes import rt_command
from tests.harness.world import World

DAY = 24 * 3600.0


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    w = World.start(tmp_path)
    yield w
    w.close()


@pytest.fixture
def rt(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Rt:
    return rt_runner(capfd, monkeypatch)


def _levels(out: str) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(out)["checks"]}


def test_doctor_on_a_healthy_running_district(world: World, rt: Rt) -> None:
    p = world.pair()
    p.start(p.a)
    p.start(p.b)
    done = rt(p.a, "doctor", "--json")
    assert done.code == 0, done.out
    checks = _levels(done.out)
    assert {n: c["level"] for n, c in checks.items()} == {
        "config": "OK",
        "files": "OK",
        "identity": "OK",
        "certificate": "OK",
        "registry": "OK",
        "directory entry": "OK",
        "clock": "OK",
        "peers": "OK",
        "database": "OK",
        "outbox": "OK",
        "server": "OK",
    }
    text = rt(p.a, "doctor")
    assert text.code == 0 and "0 failed" in text.out


def test_a_key_file_others_can_read_fails_naming_the_file_and_the_fix(world: World, rt: Rt) -> None:
    side = world.pair().a
    key = side.enrolled.config.data_dir / TLS_KEY_FILE
    key.chmod(0o644)
    done = rt(side, "doctor")
    assert done.code == 1
    assert f"chmod 600 {key}" in done.out and "FAIL" in done.out
    checks = _levels(rt(side, "doctor", "--json").out)
    assert checks["files"]["level"] == "FAIL"
    assert checks["server"]["level"] == "WARN"  # not started: a warning, not a failure
    assert key.stat().st_mode & 0o777 == 0o644  # the doctor changes nothing


def test_an_expired_certificate_fails_with_the_reenroll_path(tmp_path: Path) -> None:
    w = World.start(tmp_path)
    try:
        w.registry.clock.advance(-31 * DAY)  # the certificate it issues ran out yesterday
        enrolled = w.enroll("1964733")
        w.registry.clock.advance(31 * DAY)
        done = subprocess.run(
            [*rt_command(), "doctor", "--config", str(enrolled.config.data_dir / "district.toml")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
    finally:
        w.close()
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.split()[1:2] == ["certificate"])
    assert line.startswith("FAIL") and "expired" in line, done.stdout
    assert "rt-registry district rotate-code 1964733" in done.stdout
    registry = next(x for x in done.stdout.splitlines() if x.split()[1:2] == ["registry"])
    assert "the certificate expired" in registry, done.stdout


def test_a_certificate_seven_days_from_expiry_warns(world: World) -> None:
    from rt_client.directory import utc_now
    from rt_server.doctor import Level, diagnose

    side = world.pair().a
    config_path = side.enrolled.config.data_dir / "district.toml"
    in_24_days = utc_now().__add__(__import__("datetime").timedelta(days=24))
    checks = {c.name: c for c in diagnose(config_path, clock=lambda: in_24_days)}
    assert checks["certificate"].level is Level.WARN
    assert "rt keys rotate --tls" in checks["certificate"].fix


def test_registry_down_fails_and_says_where_it_should_be(world: World, rt: Rt) -> None:
    side = world.pair().a
    world.registry.stop()
    try:
        done = rt(side, "doctor", "--json")
    finally:
        world.registry.restart()
    assert done.code == 1
    registry = _levels(done.out)["registry"]
    assert registry["level"] == "FAIL" and world.registry.address in registry["detail"]
    assert "registry_address" in registry["fix"]


def test_a_stale_directory_entry_fails(world: World, rt: Rt) -> None:
    side = world.pair().a
    data_dir = side.enrolled.config.data_dir
    backup = data_dir.parent / "backup"
    backup.mkdir()
    for name in (*KEY_FILES, "tls-cert.pem", "directory-entry.pb"):
        shutil.copy2(data_dir / name, backup / name)
    rotate_keys(side.enrolled.config, hpke=True, signing=True)
    # The admin restores last week's backup of the data directory: older keys.
    for name in (*KEY_FILES, "tls-cert.pem", "directory-entry.pb"):
        shutil.copy2(backup / name, data_dir / name)
    done = rt(side, "doctor", "--json")
    assert done.code == 1
    entry = _levels(done.out)["directory entry"]
    assert entry["level"] == "FAIL" and "stale" in entry["detail"]
    assert "HPKE key" in entry["detail"] and "signing key" in entry["detail"]
    assert "rt keys rotate" in entry["fix"]


def test_no_config_fails_cleanly(tmp_path: Path) -> None:
    done = subprocess.run(
        [*rt_command(), "doctor", "--config", str(tmp_path / "nothing.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert "FAIL" in done.stdout and "does not exist" in done.stdout


def test_sends_stuck_in_the_outbox_warn_with_the_last_error(world: World) -> None:
    from datetime import timedelta

    from protos.rt.v1 import registrar_pb2
    from rt_client.directory import utc_now
    from rt_server.doctor import Level, diagnose
    from tests.harness.flow import PRIOR_SCHOOL, add_student

    p = world.pair()
    b = p.start(p.b)  # A stays down: B's request cannot be delivered
    add_student(b, "B1")
    b.rpc.CreateRequest(
        registrar_pb2.CreateRequestRequest(
            student_local_id="B1", prior_school=PRIOR_SCHOOL, actor="bob"
        ),
        timeout=15,
    )
    config_path = b.enrolled.config.data_dir / "district.toml"
    now = {c.name: c for c in diagnose(config_path)}
    assert now["outbox"].level is Level.OK and "1 send(s) queued" in now["outbox"].detail
    later = utc_now() + timedelta(days=2)  # still queued two days on
    checks = {c.name: c for c in diagnose(config_path, clock=lambda: later)}
    outbox = checks["outbox"]
    assert outbox.level is Level.WARN and "1 stuck" in outbox.detail
    assert "last error" in outbox.detail and "rt retry" in outbox.fix
