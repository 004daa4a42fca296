"""``rt console`` (serve the web console) and ``rt staff`` (its accounts), mounted through
the ``rt.commands`` entry-point group like ``rt serve``.

``rt console`` serves HTTPS with the certificate and key the district gives
(its web certificate, one staff browsers trust; the registry's CA is for gRPC
only), or plain HTTP only when it listens on a loopback address (behind a
TLS-terminating proxy on the same host, or for a person on that host).
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import json
import logging
import sys
from pathlib import Path
from typing import Any

from rt_client.cli.session import EXIT_OK, CliError, district_config_path
from rt_client.console.staff import ROLES, StaffError, StaffStore, staff_db_path
from rt_client.console.totp import provisioning_uri

__all__ = ["add_console_command", "add_staff_command"]

DEFAULT_LISTEN = "127.0.0.1:8080"


def add_console_command(sub: Any, common: argparse.ArgumentParser) -> None:
    sp = sub.add_parser(
        "console",
        parents=[common],
        help="serve the registrars' web console (HTTPS, or HTTP on loopback only)",
        description=(
            "Serve the web console over this district's Registrar socket. With --cert and "
            "--key it serves HTTPS; without them it listens only on a loopback address."
        ),
    )
    sp.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT ({DEFAULT_LISTEN})")
    sp.add_argument("--cert", help="the console's TLS certificate chain (PEM)")
    sp.add_argument("--key", help="its private key (PEM)")
    sp.set_defaults(func=console_command)


def add_staff_command(sub: Any, common: argparse.ArgumentParser) -> None:
    sp = sub.add_parser("staff", help="the web console's staff accounts (roles, passwords, TOTP)")
    ssub = sp.add_subparsers(dest="staff_command", required=True, metavar="ACTION")
    add = ssub.add_parser("add", parents=[common], help="create an account; prints its TOTP secret")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--name", required=True, help="the person's full name, as pages show it")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    ssub.add_parser("list", parents=[common], help="the accounts and their state")
    dis = ssub.add_parser("disable", parents=[common], help="refuse the account's logins")
    dis.add_argument("username")
    reset = ssub.add_parser(
        "reset", parents=[common], help="new password and TOTP secret; enables and unlocks"
    )
    reset.add_argument("username")
    reset.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    sp.set_defaults(func=staff_command)


def _store(args: argparse.Namespace) -> tuple[StaffStore, str]:
    from rt_client.config import load_config

    config = load_config(district_config_path(args))
    return StaffStore(staff_db_path(config.data_dir)), config.district_code


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise CliError(
            "no terminal to ask for the password on: type it at a terminal, or pipe it "
            "in with --password-stdin; nothing was changed"
        )
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise CliError("the two passwords differ: nothing was changed")
    return first


def staff_command(args: argparse.Namespace) -> int:
    """``rt staff ...``. Raises ``CliError``."""
    store, district = _store(args)
    try:
        if args.staff_command == "list":
            accounts = store.list()
            if args.json:
                print(json.dumps([a.__dict__ for a in accounts], indent=2))
            for a in [] if args.json else accounts:
                state = (
                    "disabled"
                    if a.disabled
                    else "locked"
                    if a.locked_until > store.clock()
                    else "active"
                )
                print(f"{a.username:20} {a.role:10} {state:9} {a.full_name}")
            return EXIT_OK
        if args.staff_command == "disable":
            store.disable(args.username)
            print(f"{args.username} can no longer log in (rt staff reset enables it again)")
            return EXIT_OK
        if args.staff_command == "add":
            secret = store.add(args.username, args.name, args.role, _password(args))
        else:
            secret = store.reset(args.username, _password(args))
    except StaffError as exc:
        raise CliError(str(exc)) from exc
    uri = provisioning_uri(secret, args.username, f"Records Transfer {district}")
    if args.json:
        print(json.dumps({"username": args.username, "totp_secret": secret, "otpauth_uri": uri}))
    else:
        print(
            f"{args.username}: add this key to the authenticator app (once; it is not shown again)"
        )
        print(f"  key: {secret}")
        print(f"  or:  {uri}")
    return EXIT_OK


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def console_command(args: argparse.Namespace) -> int:
    """``rt console``: serve until stopped. Raises ``CliError``."""
    import uvicorn

    from rt_client.console.app import ConsoleApp

    host, _, port_text = args.listen.rpartition(":")
    if not host or not port_text.isdigit():
        raise CliError(f"--listen {args.listen!r}: give HOST:PORT, e.g. {DEFAULT_LISTEN}")
    if bool(args.cert) != bool(args.key):
        raise CliError("give both --cert and --key (the console's certificate and its key)")
    tls = bool(args.cert)
    if not tls and not _is_loopback(host):
        raise CliError(
            f"refusing plain HTTP on {host}: staff passwords would cross the network unencrypted. "
            "Give the district's web certificate with --cert and --key, or listen on 127.0.0.1"
        )
    for path in filter(None, (args.cert, args.key)):
        if not Path(path).is_file():
            raise CliError(f"cannot read {path}: no such file")
    store, _ = _store(args)
    app = ConsoleApp(district_config_path(args), store)
    scheme = "https" if tls else "http"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("console: %(message)s"))
    logging.getLogger("rt_client.console").addHandler(handler)
    logging.getLogger("rt_client.console").setLevel(logging.INFO)
    print(f"console: serving {scheme}://{args.listen}/", flush=True)
    uvicorn.run(
        app.asgi(),
        host=host.strip("[]"),
        port=int(port_text),
        ssl_certfile=args.cert,
        ssl_keyfile=args.key,
        log_level="warning",
        access_log=False,  # request paths carry request ids; no student data, but no need
        server_header=False,
    )
    return EXIT_OK
