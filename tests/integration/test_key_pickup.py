"""Key changes that meet a crash or a running server (issue 17): a process that died while
saving the new identity files (new TLS key saved, its certificate not) is finished from
pending-keys/ instead of refusing to start; ``rt keys rotate`` beside a running ``rt serve``
is taken up by the server within seconds. Real registry, real districts, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rt_client.directory import utc_now, verify_entry
from rt_client.errors import ConfigError
from rt_client.identity import load_identity
from rt_client.keystore import PENDING_DIR, retired_hpke_keys
from rt_client.tls import spki_sha256
from rt_server.server import DistrictServer
from tests.harness.flow import add_student, approve, create_request, small_records, wait_until
from tests.harness.processes import rt_command
from tests.harness.world import World, stop_district_server


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    w = World.start(tmp_path)
    yield w
    w.close()


def _registry_spki(world: World, code: str) -> bytes:
    service = world.registry.service
    return verify_entry(service.lookup(code), service.signing_public_key, utc_now()).tls_spki_sha256


def test_a_crash_while_saving_new_identity_files_is_finished_at_start(world: World) -> None:
    config = world.enroll("1964733").config
    old_hpke = load_identity(config.data_dir).hpke_key.public_key().key_id()
    script = (
        "from rt_client.config import load_config; from rt_client.rotation import rotate_keys; "
        f"rotate_keys(load_config({str(config.data_dir / 'district.toml')!r}), tls=True, hpke=True)"
    )
    crashed = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "RT_TEST_CRASH_AT": "identity-half-written"},
        timeout=60,
    )
    assert crashed.returncode == 99
    with pytest.raises(ConfigError, match="does not match"):
        load_identity(config.data_dir)  # the new TLS key beside the old certificate
    server = DistrictServer(config)  # finishes from pending-keys/, then serves
    server.start()
    try:
        identity = load_identity(config.data_dir)
        assert server.district is not None and server.district.identity.tls == identity.tls
        assert _registry_spki(world, "1964733") == spki_sha256(identity.tls.cert_pem)
        assert identity.hpke_key.public_key().key_id() != old_hpke
        # The HPKE key it replaced is kept, to open transfers sealed to it.
        assert [r.key_id for r in retired_hpke_keys(config.data_dir, utc_now())] == [old_hpke]
        assert not (config.data_dir / PENDING_DIR).exists()
    finally:
        stop_district_server(server, grace=0)


def test_rt_keys_rotate_beside_a_running_server_is_taken_up_within_seconds(world: World) -> None:
    p = world.pair()  # renewal_check_seconds: the default hour
    a = p.start(p.a)
    p.start(p.b)
    assert a.enrolled.config.renewal_check_seconds == 3600
    config_path = a.enrolled.config.data_dir / "district.toml"
    done = subprocess.run(
        [*rt_command(), "keys", "rotate", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    on_disk = load_identity(a.enrolled.config.data_dir)
    served = lambda: a.server.district.identity  # type: ignore[union-attr]  # noqa: E731
    wait_until("the server to take up the new keys", lambda: served().tls == on_disk.tls, 10)
    assert served().signing_key.public_key() == on_disk.signing_key.public_key()
    assert served().hpke_key.private_bytes() == on_disk.hpke_key.private_bytes()
    # And it works with them: a request, an approval, a delivery.
    add_student(p.a, "A1", small_records(2))
    add_student(p.b, "B1")
    approve(p, create_request(p))
