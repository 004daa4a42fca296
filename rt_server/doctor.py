"""``rt doctor``: what an IT admin runs when something is wrong (issue 17).

One line per check, each OK, WARN or FAIL with what to do; the command exits 1
when any check FAILs (``--json`` for scripts). It reads files, the database and
the registry; it changes nothing. The checks, in order (a check that cannot
run because an earlier one failed says so instead of guessing):

- config: district.toml reads and validates;
- files: the data directory is 0700 and every private key file (identity,
  pending-keys/, hpke-retired/) is 0600; a key change left pending;
- identity: the key and certificate files load and match;
- certificate: OK, WARN from 7 days before expiry, FAIL once expired;
- registry: reachable over mutual TLS with this district's certificate;
- directory entry: the registry's current entry for this district is active
  and pins the local keys (TLS, HPKE, signing) and endpoints;
- clock: not behind the registry's (the entry and certificate it issued are not
  from this server's future);
- peers: every other district's endpoint host name resolves;
- database: reachable and at this version's schema revision;
- outbox: how many sends are queued, stuck (tried 5+ times or older than a
  day) or failed;
- server: ``rt serve`` answers on the registrar socket.
"""

from __future__ import annotations

import argparse
import enum
import json
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import grpc

from protos.rt.v1 import registry_pb2, registry_pb2_grpc
from rt_client.cli.errors import report
from rt_client.cli.session import EXIT_ERROR, EXIT_OK, district_config_path
from rt_client.config import DistrictConfig, load_config
from rt_client.directory import (
    CLOCK_SKEW,
    Clock,
    DirectoryEntry,
    registry_channel,
    utc_now,
    verify_entry,
)
from rt_client.errors import RecordsTransferError
from rt_client.identity import KEY_FILES, DistrictIdentity, load_identity
from rt_client.keystore import PENDING_DIR, RETIRED_HPKE_DIR
from rt_client.tls import spki_sha256, split_host_port

__all__ = ["Check", "Level", "add_doctor_command", "diagnose", "doctor_command"]

ALERT_BEFORE: Final = timedelta(days=7)  # as rt_server.renewal
STUCK_AFTER: Final = timedelta(days=1)
_REGISTRY_TIMEOUT: Final = 5.0


class Level(enum.Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it stands, what to do."""

    name: str
    level: Level
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        return {**asdict(self), "level": self.level.value}


def _ok(name: str, detail: str) -> Check:
    return Check(name, Level.OK, detail)


def diagnose(config_path: Path, clock: Clock = utc_now) -> list[Check]:
    """Every check, in order; never raises for what it finds."""
    checks: list[Check] = []
    try:
        config = load_config(config_path)
    except RecordsTransferError as exc:
        fix = "fix the file (rt enroll writes it; every key is described in the README)"
        return [Check("config", Level.FAIL, str(exc), fix)]
    checks.append(_ok("config", f"{config_path} (district {config.district_code})"))
    checks.extend(_file_checks(config))
    try:
        identity = load_identity(config.data_dir)
    except RecordsTransferError as exc:
        if "readable by other users" in str(exc):
            fix = "run the chmod command shown, then rt doctor again"
        elif (config.data_dir / PENDING_DIR).is_dir():
            fix = "a key change died while saving its keys: `rt keys rotate` finishes it"
        else:
            fix = "enroll this district (rt enroll), or restore the data directory from backup"
        checks.append(Check("identity", Level.FAIL, str(exc), fix))
        checks.append(
            Check(
                "registry",
                Level.WARN,
                "not checked (certificate, registry, directory entry, clock, peers): "
                "no usable identity",
                "fix the identity first",
            )
        )
    else:
        checks.append(_ok("identity", f"keys and certificate in {config.data_dir} match"))
        checks.append(_certificate(identity, clock()))
        checks.extend(_registry_checks(config, identity, clock))
    checks.extend(_database_checks(config, clock()))
    checks.append(_server(config))
    return checks


# --- files ---------------------------------------------------------------------------------------


def _private_files(data_dir: Path) -> Iterator[Path]:
    for name in KEY_FILES:
        yield data_dir / name
    for folder in (data_dir / PENDING_DIR, data_dir / RETIRED_HPKE_DIR):
        if folder.is_dir():
            yield from sorted(p for p in folder.iterdir() if p.is_file())


def _file_checks(config: DistrictConfig) -> list[Check]:
    data_dir = config.data_dir
    if not data_dir.is_dir():
        return [
            Check(
                "files",
                Level.FAIL,
                f"data directory {data_dir} does not exist",
                "enroll this district (rt enroll), or correct data_dir in the config",
            )
        ]
    problems: list[str] = []
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode & 0o077:
        problems.append(f"chmod 700 {data_dir}  (it is {mode:04o})")
    for path in _private_files(data_dir):
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            mode = stat.S_IMODE(path.stat().st_mode)
            problems.append(f"chmod 600 {path}  (a private key, readable by others: {mode:04o})")
    checks = []
    if problems:
        checks.append(
            Check(
                "files",
                Level.FAIL,
                "private files others can read: " + "; ".join(problems),
                "run the chmod commands shown; if other users could read a key, "
                "rotate it (rt keys rotate)",
            )
        )
    else:
        checks.append(_ok("files", f"{data_dir} is 0700, private keys 0600"))
    if (data_dir / PENDING_DIR).is_dir():
        checks.append(
            Check(
                "pending keys",
                Level.WARN,
                f"a key change was interrupted ({data_dir / PENDING_DIR} holds its keys)",
                "run `rt keys rotate` to finish it (rt serve also finishes it when it starts)",
            )
        )
    return checks


# --- certificate ---------------------------------------------------------------------------------


def _certificate(identity: DistrictIdentity, now: datetime) -> Check:
    not_after = identity.certificate.not_valid_after_utc
    when = f"{not_after:%Y-%m-%d %H:%M} UTC"
    left = not_after - now
    if left <= timedelta(0):
        return Check(
            "certificate",
            Level.FAIL,
            f"the TLS certificate expired on {when}: peers and the registry refuse it",
            "ask the registry operator for a fresh code (`rt-registry district rotate-code "
            f"{identity.code}`), then `rt enroll --replace` with the same --data-dir",
        )
    if left <= ALERT_BEFORE:
        return Check(
            "certificate",
            Level.WARN,
            f"the TLS certificate expires {when} ({left.days} days) and was not renewed",
            "make sure `rt serve` runs and reaches the registry (it renews on its own), "
            "or renew now: rt keys rotate --tls",
        )
    return _ok("certificate", f"valid until {when} ({left.days} days; rt serve renews it)")


# --- registry, own entry, clock, peers -----------------------------------------------------------


def _registry_checks(
    config: DistrictConfig, identity: DistrictIdentity, clock: Clock
) -> list[Check]:
    address = config.registry_address
    with registry_channel(address, identity.tls, config.registry_server_name) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        try:
            envelope = stub.LookupDistrict(
                registry_pb2.LookupDistrictRequest(district_code=identity.code),
                timeout=_REGISTRY_TIMEOUT,
            )
            others = stub.ListDistricts(
                registry_pb2.ListDistrictsRequest(), timeout=_REGISTRY_TIMEOUT
            ).entries
        except grpc.RpcError as exc:
            if identity.certificate.not_valid_after_utc <= clock():
                return [
                    Check(
                        "registry",
                        Level.FAIL,
                        f"{address} refuses this district: the certificate expired",
                        "see `certificate` above",
                    )
                ]
            return [_registry_unreachable(config, exc)]
    checks = [_ok("registry", f"{address} answers over mutual TLS")]
    try:
        entry = verify_entry(
            envelope, config.registry_signing_key_bytes, clock(), expected_code=identity.code
        )
    except RecordsTransferError as exc:
        return [
            *checks,
            Check(
                "directory entry",
                Level.FAIL,
                str(exc),
                "check registry_signing_key in the config against `rt-registry init`'s output, "
                "and this server's clock",
            ),
        ]
    checks.append(_own_entry(config, identity, entry))
    checks.append(_clock(identity, entry, clock()))
    checks.append(_peers(config, identity, list(others), clock))
    return checks


def _registry_unreachable(config: DistrictConfig, exc: grpc.RpcError) -> Check:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    text = exc.details() if isinstance(exc, grpc.Call) else ""
    if code is grpc.StatusCode.PERMISSION_DENIED or code is grpc.StatusCode.UNAUTHENTICATED:
        fix = (
            "the registry refuses this district's certificate: a key change was interrupted "
            "(rt keys rotate finishes it), the district was revoked, or its keys were replaced"
        )
    else:
        fix = (
            f"check that the registry runs at {config.registry_address} (registry_address in "
            "the config), that this server can reach it (firewall, DNS), and the clock"
        )
    name = code.name if code is not None else "error"
    return Check("registry", Level.FAIL, f"{config.registry_address}: {name}: {text}", fix)


def _own_entry(config: DistrictConfig, identity: DistrictIdentity, entry: DirectoryEntry) -> Check:
    name = "directory entry"
    if not entry.is_active:
        return Check(
            name,
            Level.FAIL,
            f"the registry lists district {identity.code} as {entry.status.name.lower()}",
            "ask the registry operator why; peers refuse this district until it is reinstated",
        )
    differ = []
    if entry.tls_spki_sha256 != spki_sha256(identity.tls.cert_pem):
        differ.append("TLS key")
    if entry.hpke_key_id != identity.hpke_key.public_key().key_id():
        differ.append("HPKE key")
    if entry.signing_public_key != identity.signing_key.public_key().public_bytes_raw():
        differ.append("signing key")
    if differ:
        return Check(
            name,
            Level.FAIL,
            f"stale: the registry's entry (version {entry.version}) pins another "
            f"{', '.join(differ)} than this data directory holds",
            "if a key change was interrupted, `rt keys rotate` finishes it; if the data "
            "directory was restored from an old backup or copied, rotate its keys "
            "(rt keys rotate); otherwise ask the registry operator who changed the entry",
        )
    if set(entry.endpoints) != set(config.advertised_endpoints):
        return Check(
            name,
            Level.WARN,
            f"the registry lists endpoints {', '.join(entry.endpoints)}, the config "
            f"{', '.join(config.advertised_endpoints)}",
            "update the registry's entry (rt keys rotate re-sends the config's endpoints) or "
            "correct advertised_endpoints",
        )
    return _ok(name, f"version {entry.version} pins this district's current keys and endpoints")


def _clock(identity: DistrictIdentity, entry: DirectoryEntry, now: datetime) -> Check:
    issued = max(entry.issued_at, identity.certificate.not_valid_before_utc)
    if now < issued - CLOCK_SKEW:
        return Check(
            "clock",
            Level.FAIL,
            f"this server's clock ({now:%Y-%m-%d %H:%M} UTC) is behind the registry's: it "
            f"issued this district's entry or certificate at {issued:%Y-%m-%d %H:%M} UTC",
            "set the clock right (enable NTP: timedatectl set-ntp true)",
        )
    return _ok("clock", "not behind the registry's (a rough check; keep NTP on)")


def _peers(
    config: DistrictConfig,
    identity: DistrictIdentity,
    envelopes: list[Any],
    clock: Clock,
    resolve: Callable[[str], object] = socket.gethostbyname,
) -> Check:
    unresolved: list[str] = []
    count = 0
    for envelope in envelopes:
        try:
            entry = verify_entry(envelope, config.registry_signing_key_bytes, clock())
        except RecordsTransferError:
            continue
        if entry.district_code == identity.code or not entry.is_active:
            continue
        count += 1
        for endpoint in entry.endpoints:
            try:
                resolve(split_host_port(endpoint)[0])
            except (OSError, RecordsTransferError, UnicodeError):
                unresolved.append(f"{entry.district_code} {endpoint}")
    if unresolved:
        return Check(
            "peers",
            Level.WARN,
            f"{len(unresolved)} peer endpoint(s) do not resolve: {', '.join(unresolved[:5])}",
            "check this server's DNS; if only some fail, those districts must fix their entry",
        )
    return _ok("peers", f"the endpoints of {count} other district(s) resolve")


# --- database, outbox, server --------------------------------------------------------------------


def _database_checks(config: DistrictConfig, now: datetime) -> list[Check]:
    from rt_server.store import make_engine, migrations
    from rt_server.store.outbox import health

    engine = make_engine(config.database_url)
    try:
        try:
            state = migrations.HISTORY.state(engine)
        except RecordsTransferError as exc:
            return [Check("database", Level.FAIL, str(exc), "check database_url in the config")]
        if state.empty:
            return [
                Check(
                    "database",
                    Level.WARN,
                    "no database yet",
                    "run `rt db upgrade` (or start `rt serve`, which creates it)",
                )
            ]
        if not state.at_head:
            newer = state.current is not None and not state.known
            return [
                Check(
                    "database",
                    Level.FAIL,
                    f"schema revision {state.current or 'none'}, this version needs {state.head}",
                    "upgrade the software (the database is newer)"
                    if newer
                    else "back the database up, then run `rt db upgrade`",
                )
            ]
        checks = [_ok("database", f"at schema revision {state.head}")]
        outbox = health(engine, now, STUCK_AFTER)
    finally:
        engine.dispose()
    if outbox.stuck or outbox.failed:
        error = f"; last error: {outbox.last_error}" if outbox.last_error else ""
        checks.append(
            Check(
                "outbox",
                Level.WARN,
                f"{outbox.queued} send(s) queued, {outbox.stuck} stuck (5+ attempts or over a "
                f"day old), {outbox.failed} failed{error}",
                "`rt list` / `rt show ID` name the request and the peer; fix what the error "
                "says (peer down, DNS, certificate), then `rt retry ID` for failed ones",
            )
        )
    else:
        checks.append(_ok("outbox", f"{outbox.queued} send(s) queued, none stuck or failed"))
    return checks


def _server(config: DistrictConfig) -> Check:
    path = config.registrar_socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
        except OSError:
            return Check(
                "server",
                Level.WARN,
                f"rt serve is not running (nothing answers on {path})",
                "start it (systemctl start rt, or rt serve --config ...)",
            )
    return _ok("server", f"rt serve answers on {path}")


# --- the command ---------------------------------------------------------------------------------


def add_doctor_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount ``rt doctor``."""
    sub.add_parser(
        "doctor",
        parents=[common],
        help="check this district's setup: config, files, certificate, registry, database",
        description=(
            "Check this district's setup and print one line per check: OK, WARN or FAIL "
            "with what to do. Changes nothing. Exits 1 if any check fails."
        ),
    ).set_defaults(func=doctor_command)


def doctor_command(args: argparse.Namespace) -> int:
    checks = diagnose(district_config_path(args))
    failed = [c.name for c in checks if c.level is Level.FAIL]
    json_mode = getattr(args, "json", False)
    if failed == ["config"] and len(checks) == 1 and json_mode:
        # No district to diagnose: a command error, as every rt command reports one.
        report(f"{checks[0].detail}; {checks[0].fix}", "config", json_mode=True)
        return EXIT_ERROR
    _print_checks(checks, json_mode)
    if failed:
        # The report says what to do; stderr says that it failed (rt's convention).
        report(f"{len(failed)} check(s) failed: {', '.join(failed)}", "failed", json_mode=json_mode)
    return EXIT_ERROR if failed else EXIT_OK


def _print_checks(checks: list[Check], json_mode: bool) -> None:
    failed = any(c.level is Level.FAIL for c in checks)
    if json_mode:
        print(json.dumps({"ok": not failed, "checks": [c.as_json() for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{c.level.value:<4}  {c.name:<{width}}  {c.detail}")
            if c.fix:
                print(f"{'':<4}  {'':<{width}}  -> {c.fix}")
        warned = sum(c.level is Level.WARN for c in checks)
        failures = sum(c.level is Level.FAIL for c in checks)
        print(f"\n{failures} failed, {warned} warning(s), {len(checks)} checks")
