"""``rt-registry log ...`` and ``rt-registry witness ...`` (parsers in ``registry.cli``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from registry.home import open_registry
from registry.witness import WitnessRequest, cosign, init_witness, load_witness_key
from rt_client.checkpoint import MAX_NOTE_SIGNATURES, MAX_NOTE_SIZE, NoteVerifier, open_checkpoint
from rt_client.errors import ConfigError

__all__ = [
    "cmd_log_checkpoint",
    "cmd_log_cosign",
    "cmd_log_verify",
    "cmd_witness_cosign",
    "cmd_witness_init",
]

EXIT_OK: Final = 0
EXIT_PROBLEMS: Final = 1


def cmd_log_verify(home: Path) -> int:
    _, service, _ = open_registry(home)
    report = service.audit_log()
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    if report.ok:
        print(
            f"ok: {report.size} entries, every leaf recomputed from the stored entries; the "
            f"root of the first {report.checkpoint_size} matches the latest signed checkpoint"
        )
        return EXIT_OK
    print(
        f"the directory log does NOT verify ({len(report.problems)} problem(s)): the database "
        "was changed outside the registry; restore it from a backup and tell the districts",
        file=sys.stderr,
    )
    return EXIT_PROBLEMS


def cmd_log_checkpoint(home: Path, from_size: int | None) -> int:
    _, service, _ = open_registry(home)
    note = service.checkpoint()
    if from_size is None:
        sys.stdout.write(note.decode())
        return EXIT_OK
    size = open_checkpoint(note, NoteVerifier(service.log_origin, service.signing_public_key)).size
    proof = service.consistency_proof(from_size, size) if from_size else []
    print(WitnessRequest(note=note, old_size=from_size, proof=proof).to_json())
    return EXIT_OK


def cmd_log_cosign(home: Path, path: Path) -> int:
    _, service, _ = open_registry(home)
    size, left_out = service.add_cosignatures(_read(path))
    print(f"cosignatures of checkpoint {size} stored; districts receive them with it")
    if left_out:
        print(
            f"{left_out} cosignature(s) left out: a checkpoint carries at most "
            f"{MAX_NOTE_SIGNATURES} signatures in {MAX_NOTE_SIZE} bytes; list the witnesses "
            "districts require in witness_keys (registry.toml) to keep theirs first"
        )
    return EXIT_OK


def cmd_witness_init(name: str, key: Path) -> int:
    vkey = init_witness(name, key)
    print("Witness key created. Give districts this line for witness_keys:")
    print(vkey)
    return EXIT_OK


def cmd_witness_cosign(args: argparse.Namespace) -> int:
    name, key = load_witness_key(args.key)
    try:
        log_key = bytes.fromhex(args.log_key)
    except ValueError as exc:
        raise ConfigError("--log-key: the registry's signing key pin, 64 hex digits") from exc
    if len(log_key) != 32:
        raise ConfigError("--log-key: the registry's signing key pin, 64 hex digits")
    request = WitnessRequest.from_json(_read(args.request).decode())
    sys.stdout.write(cosign(request, log_key, name, key, args.state).decode())
    return EXIT_OK


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
