"""The transport, from outside: a TLS scan with sslyze, and plaintext HTTP/2 on the TLS ports.

sslyze (its own virtualenv, ``.venv-tlsscan``: see ``scripts/tlsscan_venv.py``)
scans a running district server's peer listener and both registry listeners:
every protocol version from SSL 2.0 to TLS 1.3 and every cipher suite it knows
(NULL, export, anonymous, RC4, CBC, static-RSA included), compression, insecure
renegotiation, Heartbleed, ROBOT, CCS injection, downgrade protection.

Also covered, with Python's own ``ssl`` as the client, in
``tests/integration/test_tls_versions.py``: TLS 1.0 and 1.1 refused, TLS 1.2
with only CBC suites or without ECDHE refused (against ``rt-registry serve`` as
a subprocess), no client certificate refused, and the control that shows the
CBC refusal is our cipher list and not gRPC's default.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import rt_client
from protos.rt.v1 import common_pb2, peer_pb2_grpc, registry_pb2, registry_pb2_grpc
from rt_client.tls import grpc_tls_in_force
from tests.integration.test_tls_versions import EMPTY_SETTINGS, H2_PREFACE, SETTINGS_FRAME_TYPE
from tests.security.conftest import World

REPO_ROOT = Path(rt_client.__file__).resolve().parent.parent
SSLYZE_PYTHON = REPO_ROOT / ".venv-tlsscan" / "bin" / "python"

TLS13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
# Our certificates carry EC keys, so of rt_client.tls.TLS_CIPHER_SUITES' six
# TLS 1.2 suites the three ECDSA ones are the ones a server can choose.
TLS12 = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
}
WEAK_MARKERS = ("NULL", "EXPORT", "anon", "RC4", "CBC", "_DES", "3DES", "MD5", "_SHA\0")
SCANS = [
    "--sslv2",
    "--sslv3",
    "--tlsv1",
    "--tlsv1_1",
    "--tlsv1_2",
    "--tlsv1_3",
    "--compression",
    "--reneg",
    "--heartbleed",
    "--robot",
    "--openssl_ccs",
    "--fallback",
]


@pytest.fixture(scope="module")
def sslyze_python() -> Path:
    if not SSLYZE_PYTHON.exists():
        if os.environ.get("RT_REQUIRE_TLSSCAN"):
            pytest.fail(f"{SSLYZE_PYTHON} is missing: run `make tlsscan`")
        pytest.skip("sslyze is not installed: `make tlsscan` (make test does it)")
    return SSLYZE_PYTHON


def client_files(folder: Path, key_pem: bytes, cert_pem: bytes) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / "key.pem", folder / "cert.pem"
    key.write_bytes(key_pem)
    key.chmod(0o600)
    cert.write_bytes(cert_pem)
    return key, cert


def sslyze(
    python: Path, port: int, client: tuple[Path, Path] | None, workdir: Path
) -> dict[str, Any]:
    """One sslyze run against 127.0.0.1:port; returns its result for the server."""
    report = workdir / f"sslyze-{port}.json"
    args = [str(python), "-m", "sslyze", "--quiet", f"--json_out={report}"]
    args.append("--mozilla_config=disable")
    if client is not None:
        args += ["--key", str(client[0]), "--cert", str(client[1])]
    out = subprocess.run(
        [*args, *SCANS, f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120
    )
    assert report.exists(), out.stdout + out.stderr
    results = json.loads(report.read_text())["server_scan_results"]
    report.unlink()
    assert len(results) == 1
    return dict(results[0])


def accepted(scan: dict[str, Any], command: str) -> set[str]:
    result = scan["scan_result"][command]
    assert result["status"] == "COMPLETED", result
    return {c["cipher_suite"]["name"] for c in result["result"]["accepted_cipher_suites"]}


def assert_strong(scan: dict[str, Any]) -> None:
    assert scan["connectivity_status"] == "COMPLETED", scan["connectivity_error_trace"]
    for old in (
        "ssl_2_0_cipher_suites",
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ):
        assert accepted(scan, old) == set(), old
    assert accepted(scan, "tls_1_2_cipher_suites") == TLS12
    assert accepted(scan, "tls_1_3_cipher_suites") == TLS13
    for name in TLS12 | TLS13:
        assert not any(marker in name + "\0" for marker in WEAK_MARKERS), name
    r = {k: v["result"] for k, v in scan["scan_result"].items() if v and v["status"] == "COMPLETED"}
    assert r["tls_compression"]["supports_compression"] is False
    assert r["session_renegotiation"]["is_vulnerable_to_client_renegotiation_dos"] is False
    assert r["session_renegotiation"]["supports_secure_renegotiation"] is True
    assert r["heartbleed"]["is_vulnerable_to_heartbleed"] is False
    assert r["robot"]["robot_result"] in (
        "NOT_VULNERABLE_NO_ORACLE",
        "NOT_VULNERABLE_RSA_NOT_SUPPORTED",
    )
    assert r["openssl_ccs_injection"]["is_vulnerable_to_ccs_injection"] is False
    assert r["tls_fallback_scsv"]["supports_fallback_scsv"] is True


@pytest.mark.subprocess
def test_sslyze_scan_of_a_district_server(
    world: World, sslyze_python: Path, tmp_path: Path
) -> None:
    assert grpc_tls_in_force()  # the production cipher list, as `rt serve` runs it
    assert world.b.server is not None
    port = world.b.server.peer_port
    c = world.c.identity.tls
    scan = sslyze(
        sslyze_python, port, client_files(tmp_path / "c", c.key_pem, c.cert_pem), tmp_path
    )
    assert_strong(scan)
    # Without a client certificate there is no TLS session to scan at all.
    bare = sslyze(sslyze_python, port, None, tmp_path)
    assert bare["connectivity_status"] == "ERROR", bare["connectivity_result"]


@pytest.mark.subprocess
def test_sslyze_scan_of_the_registry(world: World, sslyze_python: Path, tmp_path: Path) -> None:
    registry = world.registry
    c = world.c.identity.tls
    client = client_files(tmp_path / "c", c.key_pem, c.cert_pem)
    directory = sslyze(sslyze_python, registry.running.port, client, tmp_path)
    assert_strong(directory)
    bare = sslyze(sslyze_python, registry.running.port, None, tmp_path)
    assert bare["connectivity_status"] == "ERROR"
    # The enrollment listener is server-authenticated only, by design (a district
    # has no certificate before it enrolls): same protocols and suites, no client auth.
    enrollment = sslyze(sslyze_python, registry.running.enroll_port, None, tmp_path)
    assert_strong(enrollment)
    assert enrollment["connectivity_result"]["client_auth_requirement"] == "DISABLED"


# --- plaintext on the TLS ports ------------------------------------------------------------------


def plaintext_h2(port: int) -> bytes:
    """Speak cleartext HTTP/2 (h2c, prior knowledge) to the port; return what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(H2_PREFACE + EMPTY_SETTINGS)
        chunks = []
        try:
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def test_plaintext_http2_on_the_secure_ports_is_refused(world: World) -> None:
    assert world.b.server is not None
    ports = {
        "district peer": world.b.server.peer_port,
        "registry": world.registry.running.port,
        "registry enrollment": world.registry.running.enroll_port,
    }
    for name, port in ports.items():
        answer = plaintext_h2(port)
        # No HTTP/2 session: no SETTINGS frame, at most a TLS alert (record type 0x15).
        assert not (len(answer) >= 9 and answer[3] == SETTINGS_FRAME_TYPE), name
        assert answer[:1] in (b"", b"\x15"), (name, answer[:16])
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            with pytest.raises(grpc.RpcError) as info:
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, name
            with pytest.raises(grpc.RpcError):
                peer_pb2_grpc.DistrictPeerStub(channel).SubmitRequest(
                    common_pb2.SignedEnvelope(), timeout=5
                )
            with pytest.raises(grpc.RpcError):
                registry_pb2_grpc.RegistryStub(channel).Enroll(
                    registry_pb2.EnrollRequest(), timeout=5
                )
        finally:
            channel.close()
