"""``rt-registry``: the registry operator's command line.

    rt-registry init DIR
    rt-registry --home DIR district add --code 1964733 --name "..." --school 19647331932334:"..."
    rt-registry --home DIR district list [--json]
    rt-registry --home DIR district revoke CODE
    rt-registry --home DIR district rotate-code CODE
    rt-registry --home DIR serve [--listen HOST:PORT] [--enroll-listen HOST:PORT]
    rt-registry --home DIR db upgrade|status [--json]
    rt-registry --home DIR log verify | checkpoint [--from-size N] | cosign FILE
    rt-registry witness init --name NAME --key FILE
    rt-registry witness cosign --key FILE --state FILE --log-key HEX REQUEST

``--home`` defaults to ``$RT_REGISTRY_HOME``. Expected errors are one line on
stderr and exit status 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

# Nothing imported here may import grpc (see ``main``).
from rt_client.errors import RecordsTransferError
from rt_client.tls import configure_grpc_tls

__all__ = ["build_parser", "main"]

EXIT_ERROR: Final = 1
_HOME_ENV: Final = "RT_REGISTRY_HOME"


def build_parser() -> argparse.ArgumentParser:
    # --home is accepted before or after the command; SUPPRESS keeps a
    # subcommand's absent --home from overwriting the top-level value.
    home_parent = argparse.ArgumentParser(add_help=False)
    home_parent.add_argument(
        "--home",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"registry directory (default: ${_HOME_ENV})",
    )
    parser = argparse.ArgumentParser(
        prog="rt-registry",
        description=(
            "Operate the Records Transfer registry: the directory of districts, their "
            "certificate authority, and enrollment."
        ),
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"registry directory (default: ${_HOME_ENV})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser(
        "init",
        help="create a new registry (CA, signing key, config, database)",
        description=(
            "Create a registry in DIR: a CA for district certificates, the Ed25519 key that "
            "signs directory entries, the registry's server certificate, registry.toml and the "
            "database. Prints what every district needs: the CA file and the signing key pin."
        ),
    )
    init.add_argument("dir", type=Path, metavar="DIR", help="directory to create the registry in")
    init.add_argument(
        "--listen",
        default="127.0.0.1:7443",
        metavar="HOST:PORT",
        help="mutual-TLS address (default: %(default)s)",
    )
    init.add_argument(
        "--enroll-listen",
        default="127.0.0.1:7444",
        metavar="HOST:PORT",
        help="enrollment address (default: %(default)s)",
    )
    init.add_argument(
        "--server-host",
        action="append",
        metavar="HOST",
        help=(
            "host name or IP districts use to reach the registry "
            "(repeatable; default: localhost, 127.0.0.1)"
        ),
    )
    init.add_argument("--database-url", default="", help="SQLAlchemy URL (default: SQLite in DIR)")
    init.set_defaults(command_name="init")

    info = commands.add_parser(
        "info",
        parents=[home_parent],
        help="print what districts need to enroll (CA file, signing key pin, addresses)",
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(command_name="info")

    district = commands.add_parser(
        "district", help="add, list, revoke districts; rotate their codes"
    )
    district_commands = district.add_subparsers(
        dest="district_command", required=True, metavar="ACTION"
    )

    add = district_commands.add_parser(
        "add",
        parents=[home_parent],
        help="register a district and print its one-time authorization code",
        description=(
            "Register a district with its schools. Prints the authorization code ONCE: give it to "
            "the district's IT staff over a trusted channel; the registry keeps only a hash."
        ),
        epilog='example: rt-registry district add --code 1964733 --name "Los Angeles Unified" '
        '--school 19647331932334:"Lincoln High"',
    )
    add.add_argument("--code", required=True, help="7-digit county-district code")
    add.add_argument("--name", required=True, help="district name")
    add.add_argument(
        "--school",
        action="append",
        default=[],
        metavar='CDS:"NAME"',
        help="a school: 14-digit CDS code, a colon, its name (repeatable)",
    )
    add.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="expected peer endpoint (repeatable; the district may set its own at enrollment)",
    )
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(command_name="district_add")

    listing = district_commands.add_parser(
        "list", parents=[home_parent], help="list districts and their status"
    )
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(command_name="district_list")

    revoke = district_commands.add_parser(
        "revoke",
        parents=[home_parent],
        help="revoke a district (peers refuse it once their directory cache expires)",
        description=(
            "Revoke a district: its entry is re-signed with status revoked and any outstanding "
            "authorization code is cancelled. To let it back in later, rotate its code and have it "
            "enroll again with new keys."
        ),
    )
    revoke.add_argument("code", metavar="CODE", help="7-digit county-district code")
    revoke.set_defaults(command_name="district_revoke")

    rotate = district_commands.add_parser(
        "rotate-code",
        parents=[home_parent],
        help="issue a new authorization code (re-enrollment, or a code that may have leaked)",
        description=(
            "Issue a new one-time authorization code; the old one stops working and the "
            "district's failed-attempt count restarts. Enrolling with it replaces the district's "
            "keys. (Failed attempts lock out only the address they came from, for a while; "
            "they never lock the district, so a lockout needs no new code.)"
        ),
    )
    rotate.add_argument("code", metavar="CODE", help="7-digit county-district code")
    rotate.add_argument("--json", action="store_true", help="print JSON")
    rotate.set_defaults(command_name="district_rotate")

    db = commands.add_parser("db", help="the registry database's schema (migrations)")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_upgrade = db_commands.add_parser(
        "upgrade",
        parents=[home_parent],
        help="migrate the database to this version's schema (back it up first)",
        description=(
            "Migrate the registry database named in registry.toml to the newest schema "
            "revision, in one transaction. Run it once per upgrade, before starting the new "
            "version's servers: every other command refuses a database that is not at its "
            "revision."
        ),
    )
    db_upgrade.add_argument("--json", action="store_true", help="print JSON")
    db_upgrade.set_defaults(command_name="db_upgrade")
    db_status = db_commands.add_parser(
        "status", parents=[home_parent], help="the database's schema revision, and the newest"
    )
    db_status.add_argument("--json", action="store_true", help="print JSON")
    db_status.set_defaults(command_name="db_status")

    log_parser = commands.add_parser("log", help="the directory log: audit, checkpoints, witnesses")
    log_commands = log_parser.add_subparsers(dest="log_command", required=True, metavar="ACTION")
    verify = log_commands.add_parser(
        "verify",
        parents=[home_parent],
        help="audit the whole directory log against the stored entries",
        description=(
            "Recompute every leaf of the directory log from the stored directory entries and "
            "the root of the latest signed checkpoint. Exit 0 if all agree, 1 listing each "
            "problem (a rewritten, missing or reordered entry, a truncated log)."
        ),
    )
    verify.set_defaults(command_name="log_verify")
    checkpoint = log_commands.add_parser(
        "checkpoint",
        parents=[home_parent],
        help="print the latest signed checkpoint (with --from-size: a witness request)",
    )
    checkpoint.add_argument(
        "--from-size",
        type=int,
        metavar="N",
        help="write a witness request: the checkpoint and its consistency proof from size N "
        "(the size the witness last cosigned; 0 for a new witness)",
    )
    checkpoint.set_defaults(command_name="log_checkpoint")
    cosign_parser = log_commands.add_parser(
        "cosign", parents=[home_parent], help="store a witness's cosigned checkpoint"
    )
    cosign_parser.add_argument("file", type=Path, metavar="FILE", help="the witness's output")
    cosign_parser.set_defaults(command_name="log_cosign")

    witness = commands.add_parser(
        "witness",
        help="be a witness: cosign checkpoints that extend the last one you cosigned",
        description=(
            "An independent party (a county office, the state) cosigns the registry's "
            "checkpoints after checking that each extends the last it cosigned; districts "
            "may require k of n witnesses (witness_keys, witnesses_required)."
        ),
    )
    witness_commands = witness.add_subparsers(
        dest="witness_command", required=True, metavar="ACTION"
    )
    w_init = witness_commands.add_parser("init", help="create the witness key")
    w_init.add_argument("--name", required=True, help="the witness's name, e.g. county-office")
    w_init.add_argument("--key", required=True, type=Path, help="key file to create (mode 0600)")
    w_init.set_defaults(command_name="witness_init")
    w_cosign = witness_commands.add_parser("cosign", help="check and cosign a witness request")
    w_cosign.add_argument("--key", required=True, type=Path, help="the witness key file")
    w_cosign.add_argument(
        "--state", required=True, type=Path, help="the witness's state file (last cosigned)"
    )
    w_cosign.add_argument(
        "--log-key", required=True, metavar="HEX", help="the registry's signing key pin"
    )
    w_cosign.add_argument(
        "request", type=Path, help="from `rt-registry log checkpoint --from-size`"
    )
    w_cosign.set_defaults(command_name="witness_cosign")

    serve = commands.add_parser(
        "serve",
        parents=[home_parent],
        help="run the registry until interrupted",
        description=(
            "Serve enrollment (server-auth TLS) and the directory (mutual TLS) "
            "until SIGINT/SIGTERM."
        ),
    )
    serve.add_argument("--listen", metavar="HOST:PORT", help="override the mutual-TLS address")
    serve.add_argument(
        "--enroll-listen", metavar="HOST:PORT", help="override the enrollment address"
    )
    serve.set_defaults(command_name="serve")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # imports nothing that imports grpc
    if args.command_name == "serve":
        # Before anything imports grpc: gRPC reads its cipher list at import.
        # (The one-shot commands open no TLS connection.)
        configure_grpc_tls()
    else:
        # One-shot commands print their own result; keep the service's
        # operational log lines (meant for a server's log) off the terminal.
        logging.basicConfig(level=logging.ERROR)
    from registry import _commands

    command = getattr(_commands, f"cmd_{args.command_name}")
    try:
        return int(command(args))
    except RecordsTransferError as exc:
        print(f"rt-registry: error: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
