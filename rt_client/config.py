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
import ipaddress
import math
import os
import tempfile
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import tomli_w

from rt_client.checkpoint import parse_verifier_key
from rt_client.errors import ConfigError, InvalidInput
from rt_client.ids import DistrictCode, parse_district_code
from rt_client.mail_config import MailConfig, mail_config_from_table, mail_config_to_table
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
    # Prometheus metrics over HTTP ([metrics] listen = "127.0.0.1:9464"); off when
    # empty. Loopback only unless [metrics] allow_non_loopback = true.
    metrics_listen: str = ""
    metrics_allow_non_loopback: bool = False
    # "text" (one human line per event) or "json" (one JSON object per line).
    log_format: str = "text"
    # Notices by e-mail ([mail], rt_client.mail_config); none sent without it.
    mail: MailConfig | None = None
    # 34 CFR 99.34(a)(1): false when the district's annual FERPA notice does not
    # say it forwards records to a school where the student seeks to enroll;
    # then every such disclosure makes a parent notice letter (rt notices).
    annual_notice_covers_transfers: bool = True
    # Received ciphertext is purged this many days after the import (rt purge);
    # the record of disclosures (34 CFR 99.32) is kept.
    received_retention_days: int = 90
    # EC 49068.6: who is alerted when a student flagged missing is requested
    # (an e-mail address of the law enforcement agency); empty: none configured.
    law_enforcement_contact: str = ""
    # After an HPKE rotation the old private key still opens transfers sealed
    # to it (a sender retries for up to its retry horizon, 7 days by default)
    # for this many days; then it is deleted.
    hpke_retired_key_days: int = 14
    # How often `rt serve` checks its certificate: renewed with a third of its
    # validity left, a warning in the log from 7 days before it expires.
    renewal_check_seconds: float = 3600.0
    # The live link to the SIS (rt_server.sis): a SQLAlchemy URL of the SIS's
    # database, laid out as Aeries lays it out ("" = none: our own tables are
    # the records). A read-only login is enough unless ``sis_write_back``, which
    # writes every import into the SIS's tables too.
    sis_database_url: str = ""
    sis_write_back: bool = False
    # [sis] table: ``schools`` maps the SIS's own school numbers (Aeries' STU.SC)
    # to 14-digit CDS codes, for ``rt sis load``: {"994": "19647331932334"}.
    sis: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The directory log's witnesses (c2sp.org/signed-note verifier keys,
    # ``name+hash+key``) and how many of them must have cosigned a checkpoint
    # before this district believes it (0: none required).
    witness_keys: tuple[str, ...] = ()
    witnesses_required: int = 0

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
        _check_positive("hpke_retired_key_days", self.hpke_retired_key_days)
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
            "renewal_check_seconds",
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
        _check_observability(self)
        if self.mail is not None and not isinstance(self.mail, MailConfig):
            raise ConfigError("mail: must be a [mail] table")
        if not isinstance(self.annual_notice_covers_transfers, bool):
            raise ConfigError("annual_notice_covers_transfers: must be true or false")
        _check_positive("received_retention_days", self.received_retention_days)
        if self.received_retention_days > 36500:
            raise ConfigError("received_retention_days: at most 36500 (100 years)")
        if not isinstance(self.sis_database_url, str):
            raise ConfigError("sis_database_url: must be a database URL")
        if not isinstance(self.sis_write_back, bool):
            raise ConfigError("sis_write_back: must be true or false")
        _set(self, "sis", _sis_table(self.sis))
        if self.sis_write_back and not self.sis_database_url:
            raise ConfigError(
                "sis_write_back: needs sis_database_url (the SIS database to write imports into)"
            )
        witnesses = _tuple_of_str("witness_keys", self.witness_keys)
        _set(self, "witness_keys", witnesses)
        for key in witnesses:
            try:
                parse_verifier_key(key)
            except InvalidInput as exc:
                raise ConfigError(f"witness_keys: {exc}") from exc
        required = self.witnesses_required
        if isinstance(required, bool) or not isinstance(required, int):
            raise ConfigError("witnesses_required: must be a whole number")
        if not 0 <= required <= len(witnesses):
            raise ConfigError(
                f"witnesses_required: must be from 0 to the {len(witnesses)} witness_keys listed"
            )

    @property
    def registry_signing_key_bytes(self) -> bytes:
        """The pinned registry signing key as 32 raw bytes."""
        return bytes.fromhex(self.registry_signing_key)

    @property
    def sis_schools(self) -> dict[str, str]:
        """The SIS's school numbers -> CDS codes (``[sis.schools]``)."""
        return dict(self.sis.get("schools", {}))


def _sis_table(value: object) -> dict[str, Any]:
    """The ``[sis]`` table checked: only ``schools``, each school number -> a 14-digit CDS code."""
    if not isinstance(value, dict):
        raise ConfigError("sis: must be a table ([sis])")
    unknown = sorted(set(value) - {"schools"})
    if unknown:
        raise ConfigError(f"sis: unknown key(s) {', '.join(unknown)} (known: schools)")
    schools = value.get("schools", {})
    if not isinstance(schools, dict):
        raise ConfigError('sis.schools: must be a table of "school number" = "CDS code"')
    checked: dict[str, str] = {}
    for number, cds in schools.items():
        if not isinstance(cds, str) or len(cds) != 14 or not cds.isascii() or not cds.isdigit():
            raise ConfigError(
                f'sis.schools: school "{number}" must map to its 14-digit CDS code, '
                f'e.g. "{number}" = "19647331932334"'
            )
        checked[str(number).strip()] = cds
    return {"schools": checked} if checked else {}


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
    # District certificates are short-lived: `rt serve` renews its own with a
    # third of the validity left (rt_server.renewal), so one lost key is good
    # for weeks at most, not a year.
    certificate_validity_days: int = 30
    # After a district rotates its signing key, its entry lists the old one for
    # this many days, so what it signed before (a request still queued, a
    # receipt) stays verifiable; items dated after the rotation are refused.
    previous_signing_key_days: int = 14
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
    # As a district's: Prometheus metrics on [metrics] listen, and the log format.
    metrics_listen: str = ""
    metrics_allow_non_loopback: bool = False
    log_format: str = "text"
    # The witnesses districts require (c2sp.org/signed-note verifier keys): their
    # cosignatures are kept first when a checkpoint's note must stay within 4 KiB.
    witness_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _set(self, "data_dir", Path(self.data_dir))
        _check_host_port("listen", self.listen)
        _check_host_port("enroll_listen", self.enroll_listen)
        if not self.database_url:
            _set(self, "database_url", f"{_SQLITE_PREFIX}{self.data_dir / 'registry.db'}")
        for name in (
            "entry_validity_days",
            "certificate_validity_days",
            "previous_signing_key_days",
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
        _check_observability(self)
        witnesses = _tuple_of_str("witness_keys", self.witness_keys)
        _set(self, "witness_keys", witnesses)
        for key in witnesses:
            try:
                parse_verifier_key(key)
            except InvalidInput as exc:
                raise ConfigError(f"witness_keys: {exc}") from exc


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
        elif field.name in ("database_url", "sis_database_url") and value.startswith(
            _SQLITE_PREFIX
        ):
            value = _SQLITE_PREFIX + _relative_to(Path(value[len(_SQLITE_PREFIX) :]), base)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, MailConfig):
            value = mail_config_to_table(value, lambda p: _relative_to(p, base))
        elif value is None:
            continue
        elif isinstance(value, dict) and not value:
            continue  # an empty table: left out
        table[field.name] = value
    table = _nest_tables(table)
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
    raw = _flatten_tables(path, raw)
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
    if name == "mail":
        return mail_config_from_table(value, base, where)
    if type_name == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if type_name.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if type_name == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if type_name == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a whole number")
        return value
    if type_name.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        return value
    if type_name == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if type_name == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    if name in ("database_url", "sis_database_url") and value.startswith(_SQLITE_PREFIX):
        db_path = value[len(_SQLITE_PREFIX) :]
        if db_path and db_path != ":memory:" and not db_path.startswith("/"):
            return _SQLITE_PREFIX + str(base / db_path)
    return value


# TOML tables of the config: ``[metrics] listen`` is the field ``metrics_listen``.
_TABLES: Final = ("metrics",)


def _flatten_tables(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: {key} must be a table ([{key}])")
            unknown = sorted(k for k in value if isinstance(value[k], dict))
            if unknown:
                raise ConfigError(f"config file {path}: unknown table(s) {key}.{unknown[0]}")
            flat.update({f"{key}_{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _nest_tables(table: dict[str, Any]) -> dict[str, Any]:
    """Fields of a table under it; a table left at its defaults (off) is not written."""
    nested: dict[str, Any] = {}
    for key, value in table.items():
        prefix, _, rest = key.partition("_")
        if prefix in _TABLES and rest:
            nested.setdefault(prefix, {})[rest] = value
        else:
            nested[key] = value
    if nested.get("metrics") == {"listen": "", "allow_non_loopback": False}:
        del nested["metrics"]
    return nested


def _check_observability(config: DistrictConfig | RegistryConfig) -> None:
    if not isinstance(config.metrics_listen, str):
        raise ConfigError("metrics.listen: must be host:port, e.g. 127.0.0.1:9464")
    if not isinstance(config.metrics_allow_non_loopback, bool):
        raise ConfigError("metrics.allow_non_loopback: must be true or false")
    _check_metrics_listen(config.metrics_listen, config.metrics_allow_non_loopback)
    if config.log_format not in ("text", "json"):
        raise ConfigError('log_format: must be "text" or "json"')


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) names this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def _check_metrics_listen(listen: str, allow_non_loopback: bool) -> None:
    """Refuse a metrics address that is malformed, or not loopback unless allowed.

    Raises ``ConfigError`` saying what to change.
    """
    if not listen:
        return
    try:
        host, _port = split_host_port(listen)
    except InvalidInput as exc:
        raise ConfigError(f"metrics.listen: {exc}") from exc
    if not allow_non_loopback and not _is_loopback(host):
        raise ConfigError(
            f"metrics.listen: {listen} is not a loopback address; the metrics listener has "
            "no authentication, so it listens on 127.0.0.1 or [::1] only. Put a scraper or "
            "proxy on this machine, or set allow_non_loopback = true under [metrics] if a "
            "firewall keeps everyone else out"
        )


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
