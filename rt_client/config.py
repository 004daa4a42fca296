"""Typed configuration of a district server and of the registry, read from and written to TOML.

One flat TOML table per file whose keys are the dataclass field names. Unknown
keys are refused (a misspelt key would otherwise silently fall back to a
default). Relative paths, including the path of a ``sqlite:///`` database URL,
are resolved against the folder of the config file, so a data directory and
its config can be moved together. Every problem is a ``ConfigError`` naming
the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import tomli_w

from rt_client.errors import ConfigError, InvalidInput
from rt_client.ids import DistrictCode, parse_district_code
from rt_client.tls import REGISTRY_SERVER_NAME, split_host_port

__all__ = [
    "DistrictConfig",
    "RegistryConfig",
    "load_config",
    "load_registry_config",
    "write_config",
]

_SQLITE_PREFIX: Final = "sqlite:///"


# Held in memory per concurrent delivery: bounded so a config cannot ask for gigabytes.
_MAX_BUFFERED_DELIVERY_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True)
class DistrictConfig:
    """Everything a district server and the ``rt`` tools need to know about their district.

    ``registrar_socket`` and ``database_url`` left empty mean "the default under
    ``data_dir``" (``registrar.sock`` and ``district.db``); after construction
    they always hold the effective value. Raises ``ConfigError`` on invalid values.
    """

    district_code: DistrictCode
    data_dir: Path
    peer_listen: str
    advertised_endpoints: tuple[str, ...]
    registry_address: str
    registry_enroll_address: str
    registry_ca_path: Path
    registry_signing_key: str  # hex of the registry's raw Ed25519 public key: the pin
    registrar_socket: Path = Path()
    database_url: str = ""
    directory_ttl_seconds: int = 300
    max_concurrent_rpcs: int = 64
    # Calls one district may hold at once on our peer server, so that one
    # district's load (or attack) cannot refuse another's (at most max_concurrent_rpcs).
    max_rpcs_per_peer: int = 16
    registry_server_name: str = REGISTRY_SERVER_NAME
    # Delivery worker (outbox): what could not be delivered is retried after a
    # delay drawn from [d/2, d], d = retry_base_seconds * 2^attempts capped at
    # retry_max_seconds; still undelivered retry_horizon_seconds after it was
    # queued, it is FAILED with the reason (default 7 days; 'rt retry' restarts it).
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    retry_horizon_seconds: float = 7 * 24 * 3600.0
    # An item a replica is working on is its own for this long after its last
    # heartbeat; a replica that dies leaves it to another after at most this.
    delivery_lease_seconds: float = 60.0
    # The deadline of every single (non-streaming) call to another district.
    rpc_timeout_seconds: float = 15.0
    # An incoming delivery that sends nothing for this long is cut (what it
    # sent so far is kept, the sender resumes).
    stream_idle_timeout_seconds: float = 60.0
    # A call whose single message has not arrived this long after its headers is cut.
    message_wait_seconds: float = 10.0
    # On SIGTERM: how long calls and deliveries under way may take to finish
    # before they are cut (a cut delivery resumes where it stopped).
    shutdown_grace_seconds: float = 10.0
    # An incoming delivery of at most this many bytes (one of a sender's ~1 MiB
    # frames) is held in memory until it verifies and stored in the transaction
    # that receives it; a larger one is stored frame by frame, so a cut one
    # resumes where it stopped. 0: every delivery frame by frame.
    buffered_delivery_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        try:
            code = parse_district_code(self.district_code)
        except InvalidInput as exc:
            raise ConfigError(f"district_code: {exc}") from exc
        _set(self, "district_code", code)
        _set(self, "data_dir", Path(self.data_dir))
        _set(self, "registry_ca_path", Path(self.registry_ca_path))
        endpoints = _tuple_of_str("advertised_endpoints", self.advertised_endpoints)
        if not endpoints:
            raise ConfigError("advertised_endpoints: list at least one host:port")
        _set(self, "advertised_endpoints", endpoints)
        for name in ("peer_listen", "registry_address", "registry_enroll_address"):
            _check_host_port(name, getattr(self, name))
        for endpoint in endpoints:
            _check_host_port("advertised_endpoints", endpoint)
        _set(self, "registry_signing_key", _check_ed25519_hex(self.registry_signing_key))
        if self.registrar_socket == Path():
            _set(self, "registrar_socket", self.data_dir / "registrar.sock")
        else:
            _set(self, "registrar_socket", Path(self.registrar_socket))
        if not self.database_url:
            _set(self, "database_url", f"{_SQLITE_PREFIX}{self.data_dir / 'district.db'}")
        _check_positive("directory_ttl_seconds", self.directory_ttl_seconds)
        _check_positive("max_concurrent_rpcs", self.max_concurrent_rpcs)
        _check_positive("max_rpcs_per_peer", self.max_rpcs_per_peer)
        if not isinstance(self.registry_server_name, str) or not self.registry_server_name:
            raise ConfigError("registry_server_name: must be a host name")
        for name in (
            "retry_base_seconds",
            "retry_max_seconds",
            "retry_horizon_seconds",
            "delivery_lease_seconds",
            "rpc_timeout_seconds",
            "stream_idle_timeout_seconds",
            "message_wait_seconds",
            "shutdown_grace_seconds",
        ):
            _set(self, name, _positive_seconds(name, getattr(self, name)))
        buffered = self.buffered_delivery_bytes
        if not isinstance(buffered, int) or isinstance(buffered, bool):
            raise ConfigError("buffered_delivery_bytes: must be a whole number of bytes")
        if not 0 <= buffered <= _MAX_BUFFERED_DELIVERY_BYTES:
            raise ConfigError(
                f"buffered_delivery_bytes: must be from 0 to {_MAX_BUFFERED_DELIVERY_BYTES}"
            )
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ConfigError("retry_max_seconds: must not be less than retry_base_seconds")

    @property
    def registry_signing_key_bytes(self) -> bytes:
        """The pinned registry signing key as 32 raw bytes."""
        return bytes.fromhex(self.registry_signing_key)


@dataclass(frozen=True)
class RegistryConfig:
    """Settings of the registry server (``rt-registry``).

    ``database_url`` left empty means ``sqlite:///<data_dir>/registry.db``.
    ``scrypt_n`` is the scrypt cost of stored authorization-code hashes; tests
    lower it. Raises ``ConfigError`` on invalid values.
    """

    data_dir: Path
    listen: str = "127.0.0.1:7443"
    enroll_listen: str = "127.0.0.1:7444"
    database_url: str = ""
    entry_validity_days: int = 7
    certificate_validity_days: int = 365
    # Failed enrollments lock out their source (an IPv4 address or IPv6 /64),
    # never the district (registry._limiter): after lockout_threshold failures at
    # one district, of that district; after lockout_source_threshold at any, of
    # all. For lockout_seconds, doubling with each further lockout of the same
    # source up to lockout_max_seconds; at most lockout_max_sources remembered.
    lockout_threshold: int = 5
    lockout_seconds: int = 900
    lockout_source_threshold: int = 20
    lockout_max_seconds: int = 86400
    lockout_max_sources: int = 10000
    # 2**15 with r=8 is 32 MiB per hash. Authorization codes carry 256 bits of
    # entropy, so the hash guards a stolen database, not a guessable password;
    # a higher cost would mostly hand an attacker a memory-exhaustion lever.
    scrypt_n: int = 2**15
    max_concurrent_rpcs: int = 64
    enroll_max_concurrent_rpcs: int = 8
    # A call whose single message has not arrived this long after its headers is cut.
    message_wait_seconds: float = 10.0
    server_hosts: tuple[str, ...] = ("localhost", "127.0.0.1")

    def __post_init__(self) -> None:
        _set(self, "data_dir", Path(self.data_dir))
        _check_host_port("listen", self.listen)
        _check_host_port("enroll_listen", self.enroll_listen)
        if not self.database_url:
            _set(self, "database_url", f"{_SQLITE_PREFIX}{self.data_dir / 'registry.db'}")
        for name in (
            "entry_validity_days",
            "certificate_validity_days",
            "lockout_threshold",
            "lockout_seconds",
            "lockout_source_threshold",
            "lockout_max_seconds",
            "lockout_max_sources",
            "max_concurrent_rpcs",
            "enroll_max_concurrent_rpcs",
        ):
            _check_positive(name, getattr(self, name))
        wait = _positive_seconds("message_wait_seconds", self.message_wait_seconds)
        _set(self, "message_wait_seconds", wait)
        if self.lockout_source_threshold < self.lockout_threshold:
            raise ConfigError("lockout_source_threshold: must be at least lockout_threshold")
        if self.lockout_max_seconds < self.lockout_seconds:
            raise ConfigError("lockout_max_seconds: must be at least lockout_seconds")
        n = self.scrypt_n
        if not isinstance(n, int) or n < 2 or n & (n - 1):
            raise ConfigError("scrypt_n: must be a power of two, at least 2")
        hosts = _tuple_of_str("server_hosts", self.server_hosts)
        if not hosts:
            raise ConfigError("server_hosts: list at least one host name or address")
        _set(self, "server_hosts", hosts)


_C = TypeVar("_C", DistrictConfig, RegistryConfig)

# Fields holding paths, resolved against the config file's folder.
_PATH_FIELDS: Final = frozenset({"data_dir", "registry_ca_path", "registrar_socket"})


def load_config(path: str | os.PathLike[str]) -> DistrictConfig:
    """Read a district config. Raises ``ConfigError`` (with the file and key) on any problem."""
    return _load(DistrictConfig, Path(path))


def load_registry_config(path: str | os.PathLike[str]) -> RegistryConfig:
    """Read a registry config. Raises ``ConfigError`` (with the file and key) on any problem."""
    return _load(RegistryConfig, Path(path))


def write_config(config: DistrictConfig | RegistryConfig, path: str | os.PathLike[str]) -> None:
    """Write ``config`` as TOML, atomically. Paths under the file's folder are written relative.

    Raises ``ConfigError`` if the file cannot be written.
    """
    target = Path(path).absolute()
    base = target.parent
    table: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, Path):
            value = _relative_to(value, base)
        elif field.name == "database_url" and value.startswith(_SQLITE_PREFIX):
            value = _SQLITE_PREFIX + _relative_to(Path(value[len(_SQLITE_PREFIX) :]), base)
        elif isinstance(value, tuple):
            value = list(value)
        table[field.name] = value
    try:
        base.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=base, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(
                    b"# Records Transfer configuration (written by rt tools; safe to edit).\n"
                )
                out.write(tomli_w.dumps(table).encode("utf-8"))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write config {target}: {exc.strerror or exc}") from exc


def _load(cls: type[_C], path: Path) -> _C:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    base = path.absolute().parent
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        expected = fields[name].type
        values[name] = _coerce(path, name, value, str(expected), base)
    missing = sorted(
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ConfigError(f"config file {path}: missing key(s) {', '.join(missing)}")
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc


def _coerce(path: Path, name: str, value: object, type_name: str, base: Path) -> object:
    """Check a TOML value against the field's declared type and resolve paths."""
    where = f"config file {path}: {name}"
    if name in _PATH_FIELDS:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a path")
        return base / Path(value).expanduser()
    if type_name.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if type_name == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a whole number")
        return value
    if type_name == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    if name == "database_url" and value.startswith(_SQLITE_PREFIX):
        db_path = value[len(_SQLITE_PREFIX) :]
        if db_path and db_path != ":memory:" and not db_path.startswith("/"):
            return _SQLITE_PREFIX + str(base / db_path)
    return value


def _relative_to(path: Path, base: Path) -> str:
    try:
        return str(path.absolute().relative_to(base))
    except ValueError:
        return str(path.absolute())


def _set(obj: object, name: str, value: object) -> None:
    # Normalising a frozen dataclass's own fields during construction.
    object.__setattr__(obj, name, value)


def _tuple_of_str(name: str, value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}: must be a list of strings")
    return tuple(value)


def _check_host_port(name: str, value: object) -> None:
    try:
        split_host_port(value if isinstance(value, str) else "")
    except InvalidInput as exc:
        raise ConfigError(f"{name}: {exc}") from exc


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name}: must be a positive whole number")


def _positive_seconds(name: str, value: object) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name}: must be a positive number of seconds")
    return float(value)


def _check_ed25519_hex(value: object) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            "registry_signing_key: must be the registry's Ed25519 public key as 64 hex "
            "digits (as printed by `rt-registry init`)"
        )
    return text
