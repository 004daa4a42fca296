"""Run a command with a throwaway PostgreSQL server of its own: ``make test`` uses it.

    python scripts/test_postgres.py -- python -m pytest

Creates a cluster in a fresh temporary directory (``initdb``, trust
authentication, listening on 127.0.0.1 only, on a free port, Unix socket in the
same directory), runs the command with ``RT_TEST_POSTGRES_URL`` pointing at a
database ``rt_test`` in it, then stops the server and deletes the directory —
whatever the command's outcome, and on Ctrl-C too. Exits with the command's
status. A clean clone needs nothing but PostgreSQL's binaries (found with
``pg_config``, under ``/usr/lib/postgresql/*/bin``, or in ``$RT_PG_BIN``).

PostgreSQL refuses to run as root; run as root (as CI does), the cluster is
owned by and run as the ``postgres`` system user (``runuser``), which the
Debian/Ubuntu package creates. Durability is off (``fsync=off``): the data
lives as long as the test run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

DATABASE = "rt_test"
SUPERUSER = "rt"
START_TIMEOUT = 60


class PostgresError(Exception):
    """The server could not be set up; the message says why."""


def find_bin_dir() -> Path:
    candidates: list[Path] = []
    if os.environ.get("RT_PG_BIN"):
        candidates.append(Path(os.environ["RT_PG_BIN"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for path in candidates:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    raise PostgresError(
        "PostgreSQL's server binaries (initdb, pg_ctl) were not found: install PostgreSQL "
        "(apt-get install postgresql) or set RT_PG_BIN to the folder holding them"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A temporary PostgreSQL cluster on 127.0.0.1."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="rt-postgres-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root (CI runs as root): use the
            # package's 'postgres' user, creating it on a machine that lacks it.
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "postgres"], check=False)
                try:
                    user = pwd.getpwnam("postgres")
                except KeyError as exc:
                    raise PostgresError(
                        "running as root, and PostgreSQL refuses root: create a 'postgres' "
                        "user (useradd --system postgres) or run as another user"
                    ) from exc
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.root.chmod(0o700)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, check=False, cwd=self.root
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise PostgresError(
                f"{Path(args[0]).name} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}"
            )

    def start(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.root}",
                # Throwaway data: durability buys nothing and costs seconds.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                # Every test opens its own databases and pools, two replicas each.
                "-c max_connections=400",
            ]
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log),
            "--wait",
            f"--timeout={START_TIMEOUT}",
            "-o",
            options,
            "start",
        )
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user=SUPERUSER,
                    dbname="postgres",
                    autocommit=True,
                ) as conn:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    str(self.bin_dir / "pg_ctl"),
                    "--pgdata",
                    str(self.data),
                    "-m",
                    "immediate",
                    "--wait",
                    "stop",
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    cluster = Cluster(find_bin_dir())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    # Stop the server on SIGTERM too (CI's timeout), not only on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with running_cluster() as cluster:
            print(f"PostgreSQL for the tests on 127.0.0.1:{cluster.port}", flush=True)
            env = {**os.environ, "RT_TEST_POSTGRES_URL": cluster.url}
            proc = subprocess.Popen(command, env=env)
            try:
                return proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
                return proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    except PostgresError as exc:
        print(f"test_postgres: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
