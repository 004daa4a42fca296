"""One ``rt serve`` per registrar socket: a lock file the operating system releases.

A second server started on the same config would bind the registrar socket
again (after removing the running server's) and, when it stopped, delete it:
registrars would be cut off from a server still running. So a server holds an
exclusive ``flock`` on ``<registrar socket>.lock`` (by default
``<data dir>/registrar.sock.lock``) from before it touches the socket until
after its listeners are gone, and writes its PID there. The lock belongs to
the open file, so the kernel drops it when the process ends however it ends
(``kill -9`` too): a lock file left by a dead server blocks nothing.

Replicas that share one data directory (several servers on one PostgreSQL,
DESIGN.md section 7) each have their own registrar socket, hence their own lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from rt_client.errors import ConfigError

__all__ = ["ServeLock", "lock_path_for"]


def lock_path_for(registrar_socket: Path) -> Path:
    """The lock file of the server whose registrar listens on ``registrar_socket``."""
    return registrar_socket.with_name(registrar_socket.name + ".lock")


class ServeLock:
    """The exclusive hold on one registrar socket (``acquire`` / ``release``)."""

    def __init__(self, registrar_socket: Path) -> None:
        self.socket = registrar_socket
        self.path = lock_path_for(registrar_socket)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our PID into it.

        Raises ``ConfigError`` naming the other server's PID when another
        process holds it, or when the lock file cannot be opened.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open the server lock {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "another process"
            raise ConfigError(
                f"another rt serve ({who}) is already running with this config: it holds "
                f"{self.path} and serves registrars on {self.socket}. Stop it first"
                + (f" (kill -TERM {holder})" if holder else "")
                + ", or give this server its own registrar_socket and peer_listen "
                "(a replica)."
            ) from None
        except OSError as exc:
            os.close(fd)
            raise ConfigError(f"cannot lock {self.path}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a new server)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor of the open file drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
