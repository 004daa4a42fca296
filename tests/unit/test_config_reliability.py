"""The delivery worker's and the server's bounds are settings of the district's TOML config."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rt_client.config import DistrictConfig, load_config, write_config
from rt_client.errors import ConfigError
from rt_server.server import retry_policy

BASE = {
    "district_code": "1964733",
    "peer_listen": "127.0.0.1:7401",
    "advertised_endpoints": ("127.0.0.1:7401",),
    "registry_address": "127.0.0.1:7443",
    "registry_enroll_address": "127.0.0.1:7444",
    "registry_signing_key": "ab" * 32,
}


def config(tmp_path: Path, **overrides: object) -> DistrictConfig:
    return DistrictConfig(
        data_dir=tmp_path, registry_ca_path=tmp_path / "ca.pem", **{**BASE, **overrides}
    )


def test_defaults_retry_for_a_week_and_bound_every_call(tmp_path: Path) -> None:
    c = config(tmp_path)
    policy = retry_policy(c)
    assert policy.horizon == timedelta(days=7)
    assert (policy.base_seconds, policy.max_seconds) == (1.0, 300.0)
    assert policy.lease == timedelta(seconds=60)
    assert (c.rpc_timeout_seconds, c.stream_idle_timeout_seconds) == (15.0, 60.0)
    assert c.shutdown_grace_seconds == 10.0
    assert c.buffered_delivery_bytes == 1024 * 1024  # one of a sender's frames


def test_reliability_settings_round_trip_through_toml(tmp_path: Path) -> None:
    path = tmp_path / "district.toml"
    write_config(
        config(tmp_path, retry_base_seconds=0.5, retry_max_seconds=60, retry_horizon_seconds=3600),
        path,
    )
    text = path.read_text()
    assert "retry_horizon_seconds = 3600.0" in text
    # An operator may write whole numbers or decimals.
    path.write_text(text.replace("retry_base_seconds = 0.5", "retry_base_seconds = 2"))
    loaded = load_config(path)
    assert loaded.retry_base_seconds == 2.0
    policy = retry_policy(loaded)
    assert policy.horizon == timedelta(hours=1)
    assert policy.max_seconds == 60.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"retry_horizon_seconds": 0}, "retry_horizon_seconds: must be a positive number"),
        ({"retry_base_seconds": -1}, "retry_base_seconds: must be a positive number"),
        ({"stream_idle_timeout_seconds": "60"}, "stream_idle_timeout_seconds: must be a positive"),
        ({"shutdown_grace_seconds": True}, "shutdown_grace_seconds: must be a positive"),
        ({"rpc_timeout_seconds": float("inf")}, "rpc_timeout_seconds: must be a positive"),
        ({"retry_base_seconds": 10, "retry_max_seconds": 5}, "must not be less than"),
        ({"buffered_delivery_bytes": -1}, "buffered_delivery_bytes: must be from 0"),
        ({"buffered_delivery_bytes": 10**9}, "buffered_delivery_bytes: must be from 0"),
        ({"buffered_delivery_bytes": "1"}, "buffered_delivery_bytes: must be a whole number"),
        ({"buffered_delivery_bytes": True}, "buffered_delivery_bytes: must be a whole number"),
    ],
)
def test_bad_values_are_refused_by_name(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, **overrides)


def test_a_string_in_the_toml_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "district.toml"
    write_config(config(tmp_path), path)
    text = path.read_text()
    path.write_text(text.replace("delivery_lease_seconds = 60.0", 'delivery_lease_seconds = "60"'))
    with pytest.raises(ConfigError, match="delivery_lease_seconds must be a number"):
        load_config(path)
