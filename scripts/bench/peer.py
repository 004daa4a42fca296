"""The peer baseline: how districts exchange records today, timed on the same rows.

One file per transfer, as a district's script would do it, every step a real
tool: the ``sqlite3`` CLI exports the student's rows of the eight tables to
CSV, ``tar`` bundles them into one file, ``gpg --sign --encrypt`` encrypts it
to the receiver's key and signs it with the sender's, ``cp`` drops it in the
receiver's folder, ``gpg --decrypt`` decrypts it and verifies the signature
(the status output must show a valid signature by the sender's key), ``tar``
unpacks it, and the ``sqlite3`` CLI ``.import``s each CSV and copies the rows
into the receiver's tables under the receiver's local student id, in one
transaction. No validation, no review, no audit trail: that is the point of
comparison.

Keys are GnuPG's ``future-default`` (Ed25519 signing, Curve25519 encryption),
the fastest it offers, so the baseline is as quick as a district could make it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from scripts.bench.cluster import BenchError

TOOLS = {"sqlite3": "sqlite3", "gpg": "gnupg", "tar": "tar"}


def ensure_tools(say: object = print) -> str | None:
    """Install the Debian packages the baseline needs if missing; None when ready, else why not."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return None
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return f"missing {', '.join(missing)} and cannot install them (needs apt-get as root)"
    say(f"installing the peer baseline's tools (Debian packages: {' '.join(missing)}) ...")  # type: ignore[operator]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            return f"could not install {' '.join(missing)}: {done.stderr.strip()[-300:]}"
    still = sorted(t for t in TOOLS if shutil.which(t) is None)
    return f"still missing after install: {', '.join(still)}" if still else None


def _run(argv: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise BenchError(f"peer baseline: `{' '.join(argv[:3])} ...` failed: {done.stderr.strip()}")
    return done.stdout


class PeerPipeline:
    """Two GnuPG homes (sender, receiver) with each other's public key."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.sender_home = work / "gpg-sender"
        self.receiver_home = work / "gpg-receiver"
        self.sender_fpr = self._make_key(
            self.sender_home, "Prior Valley Unified <records@prior.example>"
        )
        self.receiver_fpr = self._make_key(
            self.receiver_home, "New Harbor Unified <records@new.example>"
        )
        self._exchange(self.sender_home, self.receiver_home)
        self._exchange(self.receiver_home, self.sender_home)

    def _gpg(self, home: Path) -> list[str]:
        return [
            "gpg",
            "--homedir",
            str(home),
            "--batch",
            "--yes",
            "--quiet",
            "--trust-model",
            "always",
        ]

    def _make_key(self, home: Path, uid: str) -> str:
        home.mkdir(parents=True, mode=0o700)
        _run([
            *self._gpg(home), "--pinentry-mode", "loopback", "--passphrase", "",
            "--quick-generate-key", uid, "future-default", "default", "never",
        ])  # fmt: skip
        out = _run([*self._gpg(home), "--with-colons", "--list-secret-keys"])
        return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))

    def _exchange(self, src: Path, dst: Path) -> None:
        key = subprocess.run([*self._gpg(src), "--export"], capture_output=True, check=True).stdout
        subprocess.run([*self._gpg(dst), "--import"], input=key, capture_output=True, check=True)

    def close(self) -> None:
        for home in (self.sender_home, self.receiver_home):
            subprocess.run(
                ["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True
            )

    def transfer(
        self,
        sender_db: Path,
        receiver_db: Path,
        students: list[tuple[str, str]],
        tables: dict[str, list[str]],
    ) -> float:
        """Move each (sender id, receiver id) student's rows, one file each; returns seconds."""
        run_dir = self.work / f"run-{time.monotonic_ns()}"
        outgoing, drop, incoming = run_dir / "out", run_dir / "drop", run_dir / "in"
        for d in (outgoing, drop, incoming):
            d.mkdir(parents=True)
        started = time.perf_counter()
        for sender_id, receiver_id in students:
            self._one(
                sender_db, receiver_db, sender_id, receiver_id, tables, outgoing, drop, incoming
            )
        elapsed = time.perf_counter() - started
        shutil.rmtree(run_dir, ignore_errors=True)
        return elapsed

    def _one(
        self,
        sender_db: Path,
        receiver_db: Path,
        sender_id: str,
        receiver_id: str,
        tables: dict[str, list[str]],
        outgoing: Path,
        drop: Path,
        incoming: Path,
    ) -> None:
        # Sender: export, bundle, sign and encrypt, drop.
        export_dir = outgoing / sender_id
        export_dir.mkdir()
        script = [".headers on", ".mode csv"]
        for code in tables:
            script.append(f".once '{export_dir / code}.csv'")
            script.append(f"SELECT * FROM {code} WHERE PID = '{sender_id}' ORDER BY SQ;")
        _run(["sqlite3", "-batch", "-bail", str(sender_db)], stdin="\n".join(script) + "\n")
        bundle = outgoing / f"{sender_id}.tar"
        _run(["tar", "-cf", str(bundle), "-C", str(export_dir), "."])
        sealed = outgoing / f"{sender_id}.tar.gpg"
        _run([
            *self._gpg(self.sender_home), "--local-user", self.sender_fpr,
            "--recipient", self.receiver_fpr, "--sign", "--encrypt",
            "--output", str(sealed), str(bundle),
        ])  # fmt: skip
        _run(["cp", str(sealed), str(drop)])
        # Receiver: decrypt and verify, unpack, import under our own student id.
        opened = incoming / f"{sender_id}.tar"
        status = _run([
            *self._gpg(self.receiver_home), "--status-fd", "1", "--output", str(opened),
            "--decrypt", str(drop / sealed.name),
        ])  # fmt: skip
        if f"VALIDSIG {self.sender_fpr}" not in status and not any(
            line.startswith("[GNUPG:] VALIDSIG") and self.sender_fpr in line
            for line in status.splitlines()
        ):
            raise BenchError("peer baseline: the file's signature did not verify")
        unpacked = incoming / sender_id
        unpacked.mkdir()
        _run(["tar", "-xf", str(opened), "-C", str(unpacked)])
        script = [".bail on", "BEGIN;"]
        for code, columns in tables.items():
            csv = unpacked / f"{code}.csv"
            if not csv.exists() or csv.stat().st_size == 0:
                continue
            data = ", ".join(f"NULLIF(\"{c}\", '')" for c in columns if c not in ("PID", "SRC"))
            names = ", ".join(f'"{c}"' for c in columns if c not in ("PID", "SRC"))
            script += [
                f".import --csv '{csv}' stage_{code}",
                f'INSERT INTO {code} ("PID", {names}, "SRC") '
                f"SELECT '{receiver_id}', {data}, 'CSV' FROM stage_{code};",
                f"DROP TABLE stage_{code};",
            ]
        script.append("COMMIT;")
        _run(["sqlite3", "-batch", str(receiver_db)], stdin="\n".join(script) + "\n")
