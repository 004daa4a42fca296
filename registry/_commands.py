"""The implementations of ``rt-registry``'s commands (the parser is ``registry.cli``).

Kept apart from the parser because these import grpc, which ``registry.cli``
may only do after ``configure_grpc_tls()``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from registry import _log_commands, migrations
from registry.home import CA_CERT_FILE, CONFIG_FILE, init_home, open_registry
from registry.server import start_registry_server
from registry.store import RegistryStore
from rt_client._serving import configure_logging, wait_for_stop_signal
from rt_client.config import load_registry_config
from rt_client.errors import ConfigError

__all__ = [
    "cmd_db_status",
    "cmd_db_upgrade",
    "cmd_district_add",
    "cmd_district_list",
    "cmd_district_revoke",
    "cmd_district_rotate",
    "cmd_info",
    "cmd_init",
    "cmd_log_checkpoint",
    "cmd_log_cosign",
    "cmd_log_verify",
    "cmd_serve",
    "cmd_witness_cosign",
    "cmd_witness_init",
]

EXIT_OK: Final = 0
_HOME_ENV: Final = "RT_REGISTRY_HOME"

log = logging.getLogger("registry")


def _home(args: argparse.Namespace) -> Path:
    home = args.home or (Path(os.environ[_HOME_ENV]) if os.environ.get(_HOME_ENV) else None)
    if home is None:
        raise ConfigError(f"no registry directory: pass --home DIR or set {_HOME_ENV}")
    if not (home / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{home} is not a registry directory (no {CONFIG_FILE}); "
            "create one with `rt-registry init`"
        )
    return Path(home)


def cmd_init(args: argparse.Namespace) -> int:
    settings: dict[str, Any] = {"listen": args.listen, "enroll_listen": args.enroll_listen}
    if args.server_host:
        settings["server_hosts"] = tuple(args.server_host)
    if args.database_url:
        settings["database_url"] = args.database_url
    config = init_home(args.dir, **settings)
    _, _, keys = open_registry(config.data_dir)
    print(f"Registry created in {config.data_dir}")
    print(f"  give every district the CA certificate: {config.data_dir / CA_CERT_FILE}")
    print(f"  and the signing key pin (--registry-key): {keys.signing_public_hex}")
    print(f"Next: rt-registry --home {config.data_dir} district add --code ... --name ...")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    home = _home(args)
    config, _, keys = open_registry(home)
    info = {
        "home": str(home),
        "ca_certificate": str(home / CA_CERT_FILE),
        "signing_key": keys.signing_public_hex,
        "listen": config.listen,
        "enroll_listen": config.enroll_listen,
        "server_hosts": list(config.server_hosts),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:15} {value if not isinstance(value, list) else ', '.join(value)}")
    return EXIT_OK


def cmd_district_add(args: argparse.Namespace) -> int:
    schools = [_parse_school(text) for text in args.school]
    _, service, _ = open_registry(_home(args))
    auth_code = service.add_district(args.code, args.name, schools, args.endpoint)
    if args.json:
        print(json.dumps({"district_code": args.code, "authorization_code": auth_code}))
    else:
        print(f"District {args.code} added with {len(schools)} school(s).")
        print(f"Authorization code (shown once, not stored): {auth_code}")
        print(
            "Give it to the district's IT staff over a trusted channel; "
            "they run `rt enroll` with it."
        )
    return EXIT_OK


def cmd_district_list(args: argparse.Namespace) -> int:
    _, service, _ = open_registry(_home(args))
    rows = service.districts_overview()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "code": r.code,
                        "name": r.name,
                        "status": r.status,
                        "endpoints": list(r.endpoints),
                        "schools": r.schools,
                        "version": r.version,
                        "entry_expires_at": _iso(r.expires_at),
                        "authorization_code_outstanding": r.code_outstanding,
                        "failed_attempts": r.failed_attempts,
                        "last_lockout_at": _iso(r.last_lockout_at),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return EXIT_OK
    table = Table(title=f"{len(rows)} district(s)")
    table.add_column("Code", no_wrap=True)
    table.add_column("Name", ratio=2)
    table.add_column("Status", no_wrap=True)
    table.add_column("Ver", justify="right", no_wrap=True)
    table.add_column("Expires", no_wrap=True)
    table.add_column("Endpoints", ratio=2, overflow="fold")
    table.add_column("Schools", justify="right", no_wrap=True)
    for r in rows:
        status = r.status
        if r.code_outstanding:
            status += "\ncode issued"
        if r.failed_attempts:
            # Since the code was issued. A lockout is of the caller's address, not of the
            # district: the district's own staff can still enroll from theirs.
            status += f"\n{r.failed_attempts} failed"
        if r.last_lockout_at is not None:
            status += f"\nlast lockout\n{r.last_lockout_at:%Y-%m-%d %H:%M}Z"
        table.add_row(
            r.code,
            escape(r.name),
            status,
            str(r.version or "-"),
            _short(r.expires_at),
            escape("\n".join(r.endpoints) or "-"),
            str(r.schools),
        )
    Console().print(table)
    return EXIT_OK


def cmd_district_revoke(args: argparse.Namespace) -> int:
    _, service, _ = open_registry(_home(args))
    if service.revoke(args.code):
        print(f"District {args.code} revoked. Peers refuse it once their directory cache expires.")
    else:
        print(f"District {args.code} was already revoked.")
    return EXIT_OK


def cmd_district_rotate(args: argparse.Namespace) -> int:
    _, service, _ = open_registry(_home(args))
    auth_code = service.rotate_code(args.code)
    if args.json:
        print(json.dumps({"district_code": args.code, "authorization_code": auth_code}))
    else:
        print(f"New authorization code for district {args.code} (shown once): {auth_code}")
        print(
            "The previous code no longer works. "
            "Enrolling with this one replaces the district's keys."
        )
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    config = load_registry_config(_home(args) / CONFIG_FILE)
    store = RegistryStore.open(config.database_url, check_schema=False)
    try:
        before, after = migrations.HISTORY.upgrade(store.engine)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"from": before, "to": after, "changed": before != after}))
    elif before != after:
        print(f"Registry database upgraded from {before or 'nothing'} to revision {after}.")
    else:
        print(f"Registry database already at the newest revision ({after}).")
    return EXIT_OK


def cmd_db_status(args: argparse.Namespace) -> int:
    config = load_registry_config(_home(args) / CONFIG_FILE)
    store = RegistryStore.open(config.database_url, check_schema=False)
    try:
        state = migrations.HISTORY.state(store.engine)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"current": state.current, "head": state.head, "at_head": state.at_head}))
    elif state.at_head:
        print(f"Registry database at the newest revision ({state.head}).")
    elif not state.known:
        print(
            f"Registry database at revision {state.current}, newer than this version knows "
            f"({state.head}): upgrade the software."
        )
    else:
        print(
            f"Registry database at revision {state.current or 'none'}; the newest is "
            f"{state.head}: run 'rt-registry db upgrade'."
        )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    config, service, keys = open_registry(_home(args))
    configure_logging(config.log_format)
    running = start_registry_server(
        config, service, keys.server_tls, listen=args.listen, enroll_listen=args.enroll_listen
    )
    wait_for_stop_signal(
        f"registry ready: directory (mutual TLS) on port {running.port}, "
        f"enrollment on port {running.enroll_port}",
        log,
    )
    running.stop(grace=5.0)
    return EXIT_OK


def _parse_school(text: str) -> tuple[str, str]:
    code, sep, name = text.partition(":")
    if not sep or not name.strip():
        raise ConfigError(
            f'--school {text!r}: write it as CDS:"School name", e.g. 19647331932334:"Lincoln High"'
        )
    return code.strip(), name.strip()


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _short(when: datetime | None) -> str:
    return f"{when:%Y-%m-%d}" if when else "-"


# -- the directory log (registry._log_commands) -------------------------------------


def cmd_log_verify(args: argparse.Namespace) -> int:
    return _log_commands.cmd_log_verify(_home(args))


def cmd_log_checkpoint(args: argparse.Namespace) -> int:
    return _log_commands.cmd_log_checkpoint(_home(args), args.from_size)


def cmd_log_cosign(args: argparse.Namespace) -> int:
    return _log_commands.cmd_log_cosign(_home(args), args.file)


def cmd_witness_init(args: argparse.Namespace) -> int:
    return _log_commands.cmd_witness_init(args.name, args.key)


def cmd_witness_cosign(args: argparse.Namespace) -> int:
    return _log_commands.cmd_witness_cosign(args)
