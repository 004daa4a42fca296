"""The enrollment limiter alone, on a fake monotonic clock: who is locked out, how long, memory.

The service-level tests (real ``RegistryService``, two sources, the database
unchanged) are in ``tests/security/test_registry_attacks.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from registry._limiter import EVERY_DISTRICT, EnrollmentLimiter, source_of
from rt_client.callgate import client_address
from rt_client.config import RegistryConfig, load_registry_config, write_config
from rt_client.errors import ConfigError

A, B = "1964733", "1111111"
X, Y = "198.51.100.7", "203.0.113.9"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: FakeClock, **overrides: float) -> EnrollmentLimiter:
    settings: dict[str, float] = dict(
        district_threshold=3,
        source_threshold=10,
        lock_seconds=60,
        max_lock_seconds=600,
        max_sources=100,
    )
    settings.update(overrides)
    return EnrollmentLimiter(clock=clock, **settings)  # type: ignore[arg-type]


def fail(limit: EnrollmentLimiter, address: str, district: str, times: int) -> None:
    for _ in range(times):
        assert limit.lockout_of(address, district) is None
        limit.record_failure(address, district)


def test_a_source_is_locked_out_of_one_district_and_no_one_else_is() -> None:
    clock = FakeClock()
    limit = limiter(clock)
    fail(limit, X, A, 2)
    lockout = limit.record_failure(X, A)
    assert lockout is not None and (lockout.source, lockout.district) == (X, A)
    assert lockout.seconds == 60 and lockout.until == clock.now + 60
    assert limit.lockout_of(X, A) == lockout
    assert limit.lockout_of(X, B) is None  # another district
    assert limit.lockout_of(Y, A) is None  # another source: the district's own operator


def test_a_lock_is_not_extended_by_attempts_and_grows_with_each_lockout_up_to_the_bound() -> None:
    clock = FakeClock()
    limit = limiter(clock, source_threshold=1000)
    windows = []
    for _ in range(6):
        fail(limit, X, A, 3)
        lockout = limit.lockout_of(X, A)
        assert lockout is not None
        windows.append(lockout.seconds)
        # Checked again and again during the lock: it ends when it said it would.
        for _ in range(20):
            clock.now += lockout.seconds / 40
            assert limit.lockout_of(X, A) == lockout
        clock.now = lockout.until
        assert limit.lockout_of(X, A) is None
        assert limit.failures(X, A) == 0  # counting afresh
    assert windows == [60, 120, 240, 480, 600, 600]


def test_a_scanner_is_locked_out_of_every_district() -> None:
    clock = FakeClock()
    limit = limiter(clock)
    for i in range(9):
        assert limit.record_failure(X, f"{i:07d}") is None
    lockout = limit.record_failure(X, "9999999")
    assert lockout is not None and lockout.district == EVERY_DISTRICT
    assert limit.lockout_of(X, A) == lockout
    assert limit.lockout_of(Y, A) is None


def test_a_quiet_source_is_forgotten_back_off_included() -> None:
    clock = FakeClock()
    limit = limiter(clock)
    fail(limit, X, A, 3)
    clock.now += 1199  # the lock (60 s) is long over, but its back-off is remembered
    assert limit.lockout_of(X, A) is None and len(limit) == 1
    clock.now += 1  # twice max_lock_seconds without a failure
    assert limit.lockout_of(X, A) is None and len(limit) == 0
    fail(limit, X, A, 3)
    lockout = limit.lockout_of(X, A)
    assert lockout is not None and lockout.seconds == 60


def test_a_success_ends_the_count_at_that_district() -> None:
    limit = limiter(FakeClock())
    fail(limit, X, A, 2)
    fail(limit, X, B, 1)
    limit.record_success(X, A)
    assert (limit.failures(X, A), limit.failures(X, B), limit.failures(X)) == (0, 1, 3)


def test_memory_is_bounded_however_many_sources_try() -> None:
    clock = FakeClock()
    limit = limiter(clock, max_sources=50)
    for i in range(1000):
        limit.record_failure(f"10.0.{i // 256}.{i % 256}", A)
    assert len(limit) == 50
    # One source's districts: counts below a lock go when it is locked out of every district.
    for i in range(25):
        limit.record_failure(Y, f"{i:07d}")
    assert limit.lockout_of(Y, A) is not None
    state = limit._sources[source_of(Y)]
    assert len(state.districts) <= 10


@pytest.mark.parametrize(
    "address, key",
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),  # the same /64: one source
        ("::1", "::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unix:/run/registry.sock", "unix:/run/registry.sock"),
        ("x" * 500, "x" * 100),
    ],
)
def test_sources_are_ipv4_addresses_and_ipv6_slash_64s(address: str, key: str) -> None:
    assert source_of(address) == key


@pytest.mark.parametrize(
    "peer, address",
    [
        ("ipv4:127.0.0.1:5555", "127.0.0.1"),
        ("ipv6:[::1]:5555", "::1"),
        ("ipv6:%5B2001:db8::7%5D:443", "2001:db8::7"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
    ],
)
def test_the_client_address_of_a_grpc_peer(peer: str, address: str) -> None:
    assert client_address(peer) == address


# --- the settings ---------------------------------------------------------------------------------


def test_lockout_settings_default_sanely_and_an_old_registry_toml_still_loads(
    tmp_path: Path,
) -> None:
    config = RegistryConfig(data_dir=tmp_path)
    assert (config.lockout_threshold, config.lockout_source_threshold) == (5, 20)
    assert (config.lockout_seconds, config.lockout_max_seconds) == (900, 86400)
    assert config.lockout_max_sources == 10000
    path = tmp_path / "registry.toml"
    write_config(RegistryConfig(data_dir=tmp_path, lockout_source_threshold=50), path)
    assert load_registry_config(path).lockout_source_threshold == 50
    # Written before these settings existed: the defaults apply.
    path.write_text(
        "\n".join(line for line in path.read_text().splitlines() if "lockout_" not in line)
    )
    assert load_registry_config(path).lockout_max_seconds == 86400


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lockout_source_threshold": 0}, "lockout_source_threshold: must be a positive"),
        ({"lockout_max_sources": -1}, "lockout_max_sources: must be a positive"),
        ({"lockout_threshold": 30}, "lockout_source_threshold: must be at least"),
        ({"lockout_max_seconds": 60}, "lockout_max_seconds: must be at least lockout_seconds"),
    ],
)
def test_bad_lockout_settings_are_refused_by_name(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        RegistryConfig(data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
