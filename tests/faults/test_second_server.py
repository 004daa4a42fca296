"""A second ``rt serve`` on a config already served refuses to start (issue 13 item 3).

Before, it started silently (gRPC shares the peer port) and, when it stopped,
deleted the first server's registrar socket: registrars were cut off from a
server still running. Now the first holds a lock (``rt_server.serve_lock``):
the second says which PID holds it and exits, touching nothing; a lock left by
a killed server blocks nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from protos.rt.v1 import registrar_pb2
from scripts.loopback import health_ok
from tests.faults.conftest import Cluster
from tests.harness.processes import DistrictProcess, rt_command
from tests.harness.world import PRIOR, PRIOR_SCHOOL

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]


def lock_path_for(socket: Path) -> Path:
    """Where the server's lock is (``rt_server.serve_lock``): beside its registrar socket."""
    return socket.with_name(socket.name + ".lock")


def second_serve(district: DistrictProcess) -> tuple[int | None, str]:
    """Another ``rt serve`` on the district's config: (exit status, None if it ran; output)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*rt_command(), "serve", "--config", str(district.config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=30)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.terminate()  # it started: stop it as an operator would
        out, _ = proc.communicate(timeout=30)
        return None, out


def serves_registrars(district: DistrictProcess) -> bool:
    socket = district.config.registrar_socket
    return socket.exists() and health_ok(f"unix:{socket}")


def test_a_second_server_on_the_same_config_refuses_and_leaves_the_first_alone(
    cluster: Cluster,
) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL).start()
    assert a.server is not None
    first_pid = a.server.pid

    status, output = second_serve(a)

    assert status == 1, f"the second server started (or failed otherwise):\n{output}"
    assert f"PID {first_pid}" in output, output
    assert "already running" in output and "Traceback" not in output, output
    # The first still serves its registrars, on the same socket, and still holds the lock.
    assert a.running and serves_registrars(a)
    a.call("ListStudents", registrar_pb2.ListStudentsRequest())
    lock = lock_path_for(a.config.registrar_socket)
    assert lock.read_text().strip() == str(first_pid)
    status, output = second_serve(a)  # and again: still refused
    assert status == 1 and f"PID {first_pid}" in output


def test_a_lock_left_by_a_killed_server_does_not_block_a_restart(cluster: Cluster) -> None:
    a = cluster.district(PRIOR, PRIOR_SCHOOL).start()
    lock = lock_path_for(a.config.registrar_socket)
    a.kill()  # SIGKILL: no shutdown code ran; the lock file and the socket file stay
    assert lock.exists()

    a.start()  # the kernel dropped the dead server's lock: the restart takes it
    assert a.server is not None and serves_registrars(a)
    assert lock.read_text().strip() == str(a.server.pid)
    # A stopped server (SIGTERM) leaves nothing that blocks the next start either.
    assert a.terminate() == 0
    a.start()
    assert serves_registrars(a)
