"""Short-lived certificates renewed by a running server, HPKE rotation with a transfer in
flight, a certificate that expired while the server was off, and an enrollment whose
answer was lost (issue 17). Real registry, real districts, real mTLS; the renewal's
"when" is an injected clock, never a sleep."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from registry.service import RegistryService
from rt_client.directory import utc_now, verify_entry
from rt_client.errors import ConfigError
from rt_client.identity import load_identity
from rt_client.keystore import PENDING_DIR
from rt_client.rotation import rotate_keys
from rt_client.tls import spki_sha256
from rt_server.server import DistrictServer
from scripts.loopback import free_port
from tests.harness.flow import (
    Status,
    add_student,
    approve,
    create_request,
    import_,
    small_records,
    wait_status,
)
from tests.harness.processes import rt_command
from tests.harness.world import MutableClock, World, stop_district_server

DAY = 24 * 3600.0


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    w = World.start(tmp_path)
    yield w
    w.close()


def _registry_spki(service: RegistryService, code: str) -> bytes:
    entry = verify_entry(service.lookup(code), service.signing_public_key, utc_now())
    return entry.tls_spki_sha256


def test_renewal_while_transfers_stream_none_fails(world: World) -> None:
    p = world.pair(directory_ttl_seconds=1, buffered_delivery_bytes=0)
    clocks = {p.a.code: MutableClock(), p.b.code: MutableClock()}
    p.start(p.a, clock=clocks[p.a.code])
    p.start(p.b, clock=clocks[p.b.code])
    first = {s.code: s.server.district.identity.tls.cert_pem for s in (p.a, p.b)}  # type: ignore[union-attr]
    for clock in clocks.values():
        clock.advance(21 * DAY)  # 9 of 30 days left: less than a third
    renewed = {p.a.code: 0, p.b.code: 0}
    outcomes: dict[str, Counter[str]] = {p.a.code: Counter(), p.b.code: Counter()}
    stop = threading.Event()

    def renew_again_and_again() -> None:
        # A renewal of each side every second (in life: one per ten days).
        while not stop.wait(0.5):
            for side in (p.a, p.b):
                did = side.server.renewer.check()  # type: ignore[union-attr]
                outcomes[side.code][did] += 1
                if did == "renewed":
                    renewed[side.code] += 1

    renewer = threading.Thread(target=renew_again_and_again)
    renewer.start()
    try:
        # At least 4 transfers, and on until each side has renewed at least once
        # while they stream (a fast machine could finish 4 before the first check).
        for i in range(12):
            if i >= 4 and min(renewed.values()) >= 1:
                break
            ssid = f"12345678{i}0"
            add_student(p.a, f"A{i}", small_records(i, 40), ssid=ssid)
            add_student(p.b, f"B{i}", ssid=ssid)
            request_id = create_request(p, f"B{i}")
            approve(p, request_id)
            assert not import_(p, request_id).already_imported
            wait_status(p.b, request_id, Status.IMPORTED)
    finally:
        stop.set()
        renewer.join()
    assert renewed[p.a.code] >= 1 and renewed[p.b.code] >= 1, outcomes
    for side in (p.a, p.b):
        identity = side.server.district.identity  # type: ignore[union-attr]
        assert identity.tls.cert_pem != first[side.code]
        on_disk = load_identity(side.enrolled.config.data_dir)
        assert on_disk.tls == identity.tls  # what is served is what is saved
        assert _registry_spki(world.registry.service, side.code) == spki_sha256(
            on_disk.tls.cert_pem
        )
        assert not (side.enrolled.config.data_dir / PENDING_DIR).exists()


def test_alert_from_seven_days_before_expiry(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    p = world.pair()
    clock = MutableClock()
    p.start(p.a, clock=clock)
    renewer = p.a.server.renewer  # type: ignore[union-attr]
    assert renewer.check() == "ok"
    world.registry.stop()  # cannot renew: the alert is what is left
    clock.advance(21 * DAY)
    assert renewer.check() == "failed"
    assert "certificate renewal failed" in caplog.text
    assert "expires" not in caplog.text  # 9 days left: not yet
    clock.advance(2.5 * DAY)
    assert renewer.check() == "failed"
    assert "the TLS certificate expires" in caplog.text


def test_hpke_rotation_with_a_transfer_sealed_to_the_old_key_in_flight(world: World) -> None:
    p = world.pair()
    p.start(p.a)
    b = p.start(p.b)
    add_student(p.a, "A1", small_records(3))
    add_student(p.b, "B1")
    request_id = create_request(p)
    b.stop()
    p.started.remove(b)
    p.a.rpc.ApproveRequest(
        __import__("protos.rt.v1.registrar_pb2", fromlist=["x"]).ApproveRequestRequest(
            request_id=request_id, actor="alice"
        ),
        timeout=15,
    )
    # A sealed the records to B's current key and cannot deliver: B is off. B rotates.
    old_key_id = b.enrolled.identity.hpke_key.public_key().key_id()
    rotation = rotate_keys(b.enrolled.config, hpke=True)
    assert rotation.hpke and rotation.identity.hpke_key.public_key().key_id() != old_key_id
    p.start(b)
    wait_status(p.b, request_id, Status.DATA_RECEIVED)
    result = import_(p, request_id)
    assert not result.already_imported and result.imported
    wait_status(p.b, request_id, Status.IMPORTED)


def test_certificate_expired_while_off_clear_message_then_reenroll(world: World) -> None:
    side = world.pair().a
    config = side.enrolled.config
    later = MutableClock()
    later.advance(31 * DAY)
    with pytest.raises(ConfigError) as refused:
        DistrictServer(config, clock=later).start()
    text = str(refused.value)
    assert "expired" in text and "rt-registry district rotate-code" in text
    assert "rt enroll --replace" in text
    # The path it names works: a fresh code, enroll again in the same folder, serve.
    code = world.registry.service.rotate_code(config.district_code)
    from rt_client.enroll import enroll_district

    enroll_district(
        code=config.district_code,
        authorization_code=code,
        **world.registry.enroll_settings(),
        endpoints=list(config.advertised_endpoints),
        data_dir=config.data_dir,
        replace_existing=True,
    )
    server = DistrictServer(config)
    server.start()
    stop_district_server(server, grace=0)


def test_rt_serve_with_an_expired_certificate_says_what_to_do(tmp_path: Path) -> None:
    w = World.start(tmp_path)
    try:
        # The registry's clock 31 days back: the certificate it issues ran out yesterday.
        w.registry.clock.advance(-31 * DAY)
        enrolled = w.enroll("1964733")
    finally:
        w.close()
    done = subprocess.run(
        [*rt_command(), "serve", "--config", str(enrolled.config.data_dir / "district.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    assert "expired" in done.stderr and "rotate-code" in done.stderr, done.stderr


def test_enrollment_survives_a_crash_between_the_answer_and_saving_keys(tmp_path: Path) -> None:
    w = World.start(tmp_path)
    try:
        reg = w.registry
        auth_code = reg.add_district("1964733", "Prior", [("19647330000001", "Lincoln")])
        data_dir = tmp_path / "district"
        args = [
            *rt_command(),
            "enroll",
            "--code",
            "1964733",
            "--registry",
            reg.address,
            "--registry-enroll",
            reg.enroll_address,
            "--registry-ca",
            str(reg.ca_path),
            "--registry-key",
            reg.signing_key_hex,
            "--endpoint",
            f"127.0.0.1:{free_port()}",
            "--data-dir",
            str(data_dir),
        ]
        env = {**os.environ, "RT_AUTH_CODE": auth_code}
        crashed = subprocess.run(
            args,
            env={**env, "RT_TEST_CRASH_AT": "enroll-answered"},
            capture_output=True,
            timeout=60,
        )
        assert crashed.returncode == 99  # died after the registry answered
        assert not (data_dir / "tls-cert.pem").exists()
        assert (data_dir / PENDING_DIR).is_dir()
        # The code is consumed; running the same command again finishes the enrollment.
        finished = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert finished.returncode == 0, finished.stderr
        identity = load_identity(data_dir)
        assert _registry_spki(reg.service, "1964733") == spki_sha256(identity.tls.cert_pem)
        assert not (data_dir / PENDING_DIR).exists()
    finally:
        w.close()


def test_rotation_survives_a_crash_between_the_answer_and_saving_keys(world: World) -> None:
    enrolled = world.enroll("1964733")
    config = enrolled.config
    script = (
        "from rt_client.config import load_config; from rt_client.rotation import rotate_keys; "
        f"rotate_keys(load_config({str(config.data_dir / 'district.toml')!r}), tls=True)"
    )
    crashed = subprocess.run(
        [os.sys.executable, "-c", script],  # type: ignore[attr-defined]
        env={**os.environ, "RT_TEST_CRASH_AT": "rotate-answered"},
        timeout=60,
    )
    assert crashed.returncode == 99
    # The registry pins the new key; the old certificate is refused there now.
    assert _registry_spki(world.registry.service, "1964733") != spki_sha256(
        load_identity(config.data_dir).tls.cert_pem
    )
    server = DistrictServer(config)  # finishes the pending rotation before serving
    server.start()
    try:
        identity = load_identity(config.data_dir)
        assert _registry_spki(world.registry.service, "1964733") == spki_sha256(
            identity.tls.cert_pem
        )
    finally:
        stop_district_server(server, grace=0)


def test_rt_keys_show_and_rotate_hpke(
    world: World, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.harness.cli import rt_runner

    rt = rt_runner(capfd, monkeypatch)
    side = world.pair().a
    before = rt(side, "keys", "show", "--json")
    assert before.code == 0, before.err
    old = json.loads(before.out)
    rotated = rt(side, "keys", "rotate", "--hpke")
    assert rotated.code == 0 and "HPKE" in rotated.out, rotated.err
    after = json.loads(rt(side, "keys", "show", "--json").out)
    assert after["hpke_key_id"] != old["hpke_key_id"]
    assert after["tls_spki_sha256"] == old["tls_spki_sha256"]
    assert [k["key_id"] for k in after["retired_hpke_keys"]] == [old["hpke_key_id"]]
