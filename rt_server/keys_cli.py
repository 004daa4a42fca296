"""``rt keys show`` and ``rt keys rotate [--tls] [--hpke] [--signing]`` (DESIGN.md section 3).

Rotation goes through ``rt_client.rotation.rotate_keys`` (crash-safe; an
interrupted rotation is finished by running the command again). A running
``rt serve`` picks the new keys up within a few seconds: its renewal thread
watches the key files (``rt_server.renewal``).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC
from typing import Any

from google.protobuf.message import DecodeError

from protos.rt.v1 import common_pb2
from rt_client.cli.session import district_config_path
from rt_client.config import load_config
from rt_client.directory import utc_now
from rt_client.identity import DistrictIdentity, load_identity
from rt_client.keystore import PENDING_DIR, retired_hpke_keys
from rt_client.rotation import rotate_keys

__all__ = ["add_keys_command"]


def add_keys_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Mount ``rt keys show`` and ``rt keys rotate``."""
    keys = sub.add_parser("keys", help="this district's keys: show them, rotate them")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_sub.add_parser(
        "show", parents=[common], help="key ids, certificate validity, retired HPKE keys"
    ).set_defaults(func=show_command)
    rotate = keys_sub.add_parser(
        "rotate",
        parents=[common],
        help="replace keys at the registry (default: all three)",
        description=(
            "Generate new keys, have the registry bind them (UpdateEntry), then save them. "
            "The old HPKE key is kept for hpke_retired_key_days to open transfers sealed to it."
        ),
    )
    rotate.add_argument("--tls", action="store_true", help="a new TLS key and certificate")
    rotate.add_argument("--hpke", action="store_true", help="a new HPKE (encryption) key")
    rotate.add_argument("--signing", action="store_true", help="a new Ed25519 signing key")
    rotate.set_defaults(func=rotate_command)


def _facts(config_path: str) -> dict[str, Any]:
    config = load_config(config_path)
    identity = load_identity(config.data_dir)
    cert = identity.certificate
    now = utc_now()
    return {
        "district": identity.code,
        "tls_spki_sha256": identity.tls.spki_sha256().hex(),
        "certificate_not_after": cert.not_valid_after_utc.isoformat(),
        "certificate_days_left": round((cert.not_valid_after_utc - now).total_seconds() / 86400, 1),
        "hpke_key_id": identity.hpke_key.public_key().key_id(),
        "signing_public_key": identity.signing_key.public_key().public_bytes_raw().hex(),
        "retired_hpke_keys": [
            {"key_id": r.key_id, "not_after": r.not_after.isoformat()}
            for r in retired_hpke_keys(config.data_dir, now)
        ],
        # As of the entry saved at the last key change (the registry drops them at expires_at).
        "previous_signing_keys": [
            {
                "public_key": bytes(k.public_key).hex(),
                "retired_at": k.not_after.ToDatetime(tzinfo=UTC).isoformat(),
                "accepted_until": k.expires_at.ToDatetime(tzinfo=UTC).isoformat(),
            }
            for k in _saved_entry(identity).previous_signing_keys
        ],
        "rotation_pending": (config.data_dir / PENDING_DIR).is_dir(),
    }


def _saved_entry(identity: DistrictIdentity) -> common_pb2.DirectoryEntry:
    """Our own entry as saved with the keys (verified when it was received)."""
    try:
        return common_pb2.DirectoryEntry.FromString(identity.entry.body)
    except DecodeError:
        return common_pb2.DirectoryEntry()


def show_command(args: argparse.Namespace) -> int:
    facts = _facts(str(district_config_path(args)))
    if getattr(args, "json", False):
        print(json.dumps(facts, indent=2))
        return 0
    for name, value in facts.items():
        print(f"{name.replace('_', ' ')}: {value}")
    return 0


def rotate_command(args: argparse.Namespace) -> int:
    config = load_config(district_config_path(args))
    every = not (args.tls or args.hpke or args.signing)
    rotation = rotate_keys(
        config, tls=args.tls or every, hpke=args.hpke or every, signing=args.signing or every
    )
    done = [n for n, v in (("TLS", rotation.tls), ("HPKE", rotation.hpke)) if v]
    done += ["signing"] if rotation.signing else []
    earlier = " (finished the rotation an earlier run started)" if rotation.finished_earlier else ""
    print(f"new keys in force at the registry: {', '.join(done) or 'none'}{earlier}")
    print("a running `rt serve` takes them up within a few seconds (no restart needed)")
    return 0
