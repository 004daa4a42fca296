"""TLS versions and cipher suites of our listeners, probed with Python's ``ssl`` as a raw client.

What is tested where, and why:

- **Versions** (TLS 1.2 and 1.3 in, 1.1 and 1.0 out) come from gRPC core's
  defaults, which gRPC Python cannot change; they are tested, not assumed, on
  a district's peer listener (in this process, behind the real interceptor)
  and on both listeners of a registry started through its real entry point.
- **Cipher suites** come from ``GRPC_SSL_CIPHER_SUITES``, which gRPC reads once,
  when ``grpc`` is first imported. Under pytest that is before any conftest
  runs (pytest-grpc imports grpc), so these tests run ``rt-registry serve`` as a
  subprocess -- the entry point calls ``configure_grpc_tls()`` before importing
  grpc -- plus a control server that does not, to show the refusal is ours.

A handshake that "completes" on the client is not proof of acceptance: in TLS
1.3 the server checks the client certificate after the client considers the
handshake done. An accepted connection must therefore also answer the HTTP/2
connection preface with the server's SETTINGS frame.

OpenSSL 3 no longer offers TLS 1.0/1.1 at its default security level (their
handshake signatures use SHA-1/MD5): without ``@SECLEVEL=0`` it is our *client*
that gives up ("no ciphers available") before sending anything, which would
prove nothing about the server. With ``@SECLEVEL=0`` the client really sends
a TLS 1.1 ClientHello, and what we observe is the server's refusal.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import rt_client
from registry.ca import RegistryCA
from registry.home import CA_CERT_FILE, CA_KEY_FILE, init_home
from rt_client.ids import DistrictCode
from rt_client.tls import REGISTRY_SERVER_NAME, TLS_CIPHER_SUITES, district_server_name

REPO_ROOT = Path(rt_client.__file__).resolve().parent.parent
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_FRAME_TYPE = 0x04

AEAD_TLS12 = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
]
CBC_ONLY = ":".join(
    [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-ECDSA-AES256-SHA384",
        "ECDHE-RSA-AES128-SHA",
        "AES128-SHA256",
    ]
)
NON_ECDHE_ONLY = "AES128-GCM-SHA256:AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256"


@dataclass(frozen=True)
class ClientFiles:
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class Listener:
    port: int
    client: ClientFiles
    server_name: str  # the name its certificate must carry, as our own clients check it
    requires_client_cert: bool = True


def write_client_files(folder: Path, key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> ClientFiles:
    folder.mkdir(parents=True, exist_ok=True)
    files = ClientFiles(folder / "cert.pem", folder / "key.pem", folder / "ca.pem")
    files.cert.write_bytes(cert_pem)
    files.key.write_bytes(key_pem)
    files.key.chmod(0o600)
    files.ca.write_bytes(ca_pem)
    return files


def tls_client(
    files: ClientFiles,
    version: ssl.TLSVersion,
    ciphers: str | None = None,
    *,
    with_cert: bool = True,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files.ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TLSv1 / TLSv1_1 members
        ctx.minimum_version = version
        ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    if with_cert:
        ctx.load_cert_chain(files.cert, files.key)
    ctx.set_alpn_protocols(["h2"])  # gRPC requires ALPN h2
    return ctx


def connect(port: int, ctx: ssl.SSLContext, server_name: str) -> tuple[str, str, str | None]:
    """Handshake, then prove the server accepted us: it must answer the HTTP/2 preface.

    Returns (TLS version, cipher, ALPN protocol). Raises when refused.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(H2_PREFACE + EMPTY_SETTINGS)
            header = tls.recv(9)
            if len(header) != 9 or header[3] != SETTINGS_FRAME_TYPE:
                raise ConnectionError(f"no HTTP/2 SETTINGS frame from the server: {header!r}")
            return str(tls.version()), tls.cipher()[0], tls.selected_alpn_protocol()


def assert_refused(listener: Listener, ctx: ssl.SSLContext) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)) as info:
        connect(listener.port, ctx, listener.server_name)
    # The server refused: our own OpenSSL did offer what we asked for.
    assert "NO_CIPHERS_AVAILABLE" not in str(info.value)
    assert "NO_PROTOCOLS_AVAILABLE" not in str(info.value)


# -- listeners -------------------------------------------------------------------


@dataclass(frozen=True)
class PeerSetup:
    listener: Listener  # A's gated peer listener; B's certificate as the client's
    server: object  # the GatedServer, whose servicer records authorized calls
    a_files: ClientFiles  # A's own key and certificate


@pytest.fixture
def peer_listener(
    tmp_path: Path, enrolled_district, directory_client, gated_peer_server
) -> PeerSetup:
    """District A's gated peer listener, in this process."""
    a, b = enrolled_district("1964733"), enrolled_district("1111111")
    server = gated_peer_server(a, directory_client(a))
    tls = b.identity.tls
    files = write_client_files(tmp_path / "b", tls.key_pem, tls.cert_pem, tls.ca_pem)
    a_files = write_client_files(
        tmp_path / "a", a.identity.tls.key_pem, a.identity.tls.cert_pem, tls.ca_pem
    )
    return PeerSetup(Listener(server.port, files, district_server_name(a.code)), server, a_files)


@dataclass(frozen=True)
class RegistryProcess:
    directory: Listener  # mutual TLS
    enrollment: Listener  # server-auth TLS


@pytest.fixture
def registry_process(tmp_path: Path) -> Iterator[RegistryProcess]:
    """``rt-registry serve`` as a subprocess: the real entry point, cipher restriction and all."""
    home = tmp_path / "registry-process"
    init_home(home, listen="127.0.0.1:0", enroll_listen="127.0.0.1:0", scrypt_n=16)
    ca = RegistryCA.from_pem((home / CA_KEY_FILE).read_bytes(), (home / CA_CERT_FILE).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue_district_certificate_for_key(
        key.public_key(), DistrictCode("1964733"), dt.timedelta(days=1)
    )
    files = write_client_files(
        tmp_path / "client",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
        ca.certificate_pem,
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("GRPC_SSL_CIPHER_SUITES", None)  # the entry point must set it itself
    proc = subprocess.Popen(
        [sys.executable, "-m", "registry.cli", "--home", str(home), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"port (\d+), enrollment on port (\d+)", line)
        assert match, (
            f"registry did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
        yield RegistryProcess(
            directory=Listener(int(match.group(1)), files, REGISTRY_SERVER_NAME),
            enrollment=Listener(
                int(match.group(2)), files, REGISTRY_SERVER_NAME, requires_client_cert=False
            ),
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def all_listeners(peer_listener: PeerSetup, registry_process: RegistryProcess) -> list[Listener]:
    return [peer_listener.listener, registry_process.directory, registry_process.enrollment]


# -- versions --------------------------------------------------------------------------


def test_tls_1_3_is_accepted(peer_listener, registry_process) -> None:
    for listener in all_listeners(peer_listener, registry_process):
        version, cipher, alpn = connect(
            listener.port,
            tls_client(listener.client, ssl.TLSVersion.TLSv1_3),
            listener.server_name,
        )
        assert (version, alpn) == ("TLSv1.3", "h2")
        assert cipher.startswith("TLS_")


@pytest.mark.parametrize("cipher", AEAD_TLS12[:2])
def test_tls_1_2_with_ecdhe_and_aes_gcm_is_accepted(
    peer_listener, registry_process, cipher: str
) -> None:
    for listener in all_listeners(peer_listener, registry_process):
        version, negotiated, alpn = connect(
            listener.port,
            tls_client(listener.client, ssl.TLSVersion.TLSv1_2, cipher),
            listener.server_name,
        )
        assert (version, negotiated, alpn) == ("TLSv1.2", cipher, "h2")


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1], ids=["TLSv1.1", "TLSv1.0"]
)
def test_tls_1_1_and_1_0_are_refused(
    peer_listener, registry_process, version: ssl.TLSVersion
) -> None:
    for listener in all_listeners(peer_listener, registry_process):
        assert_refused(listener, tls_client(listener.client, version, "DEFAULT:@SECLEVEL=0"))
    assert peer_listener.server.servicer.calls == []


def test_our_client_really_offers_tls_1_1(peer_listener) -> None:
    """Without SECLEVEL=0 our own OpenSSL refuses to offer TLS 1.1: the test above needs it."""
    listener = peer_listener.listener
    with pytest.raises(ssl.SSLError, match="NO_CIPHERS_AVAILABLE|NO_PROTOCOLS_AVAILABLE"):
        connect(
            listener.port,
            tls_client(listener.client, ssl.TLSVersion.TLSv1_1),
            listener.server_name,
        )


# -- cipher suites (the entry point's restriction) ------------------------------------------


@pytest.mark.subprocess
def test_tls_1_2_chacha20_is_accepted_by_the_entry_point(registry_process) -> None:
    # Not in gRPC's default list: accepted only because our list is in force.
    for listener in (registry_process.directory, registry_process.enrollment):
        ctx = tls_client(listener.client, ssl.TLSVersion.TLSv1_2, AEAD_TLS12[2])
        assert connect(listener.port, ctx, listener.server_name)[:2] == ("TLSv1.2", AEAD_TLS12[2])


@pytest.mark.subprocess
def test_tls_1_2_with_only_cbc_suites_is_refused(registry_process) -> None:
    for listener in (registry_process.directory, registry_process.enrollment):
        assert_refused(listener, tls_client(listener.client, ssl.TLSVersion.TLSv1_2, CBC_ONLY))


@pytest.mark.subprocess
def test_tls_1_2_without_ecdhe_is_refused(registry_process) -> None:
    for listener in (registry_process.directory, registry_process.enrollment):
        assert_refused(
            listener, tls_client(listener.client, ssl.TLSVersion.TLSv1_2, NON_ECDHE_ONLY)
        )


_CONTROL_SERVER = textwrap.dedent(
    """
    import os, sys
    os.environ["GRPC_SSL_CIPHER_SUITES"] = sys.argv[1]
    from concurrent import futures
    import grpc
    key, cert, ca = (open(p, "rb").read() for p in sys.argv[2:5])
    server = grpc.server(futures.ThreadPoolExecutor(1))
    creds = grpc.ssl_server_credentials([(key, cert)], ca, True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.subprocess
def test_control_a_listener_without_our_cipher_list_accepts_cbc(peer_listener: PeerSetup) -> None:
    """The CBC refusals above come from our list, not from gRPC itself or the key type.

    District A's own certificate, served by a gRPC server whose list allows
    one CBC suite, accepts the very client that our listeners refuse.
    """
    listener, a = peer_listener.listener, peer_listener.a_files
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CONTROL_SERVER,
            "ECDHE-ECDSA-AES128-SHA:TLS_AES_128_GCM_SHA256",
            str(a.key),
            str(a.cert),
            str(a.ca),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        version, cipher, _ = connect(
            port,
            tls_client(listener.client, ssl.TLSVersion.TLSv1_2, CBC_ONLY),
            listener.server_name,  # A's certificate: A's own name
        )
        assert (version, cipher) == ("TLSv1.2", "ECDHE-ECDSA-AES128-SHA")
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


@pytest.mark.subprocess
def test_configure_grpc_tls_refuses_to_run_after_grpc_is_imported() -> None:
    script = "import grpc\nfrom rt_client.tls import configure_grpc_tls\nconfigure_grpc_tls()\n"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("GRPC_SSL_CIPHER_SUITES", None)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode != 0
    assert "configure_grpc_tls() ran after `import grpc`" in result.stderr
    ok = (
        "from rt_client.tls import configure_grpc_tls, grpc_tls_in_force\n"
        "configure_grpc_tls()\nimport grpc\nassert grpc_tls_in_force()\n"
    )
    assert subprocess.run([sys.executable, "-c", ok], env=env, timeout=30).returncode == 0
    assert TLS_CIPHER_SUITES.count(":") == 8


# -- client certificates -------------------------------------------------------------------


def test_clients_without_certificate_get_no_http2_session(peer_listener, registry_process) -> None:
    for listener in all_listeners(peer_listener, registry_process):
        for version, ciphers in (
            (ssl.TLSVersion.TLSv1_3, None),
            (ssl.TLSVersion.TLSv1_2, AEAD_TLS12[0]),
        ):
            ctx = tls_client(listener.client, version, ciphers, with_cert=False)
            if listener.requires_client_cert:
                assert_refused(listener, ctx)
            else:  # the enrollment listener is server-authenticated only, by design
                assert connect(listener.port, ctx, listener.server_name)[0] in (
                    "TLSv1.2",
                    "TLSv1.3",
                )
    assert peer_listener.server.servicer.calls == []
