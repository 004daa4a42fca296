"""``rt staff disable|list|reset`` as a person runs them, and ``rt console`` over HTTPS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.console.conftest import ConsoleWorld
from tests.console.test_console_attacks import http_login
from tests.harness.console import ConsoleProcess


def test_staff_disable_list_reset(console_world: ConsoleWorld) -> None:
    new = console_world.new
    new.add_staff("dee", "requester", "Dee Requester")
    done = new.rt("staff", "disable", "dee")
    assert done.returncode == 0, done.stderr
    reply, _ = http_login(new, "dee")
    assert reply.status_code == 401 and "disabled" in reply.text
    listing = new.rt("staff", "list")
    assert any(
        line.split()[:3] == ["dee", "requester", "disabled"] for line in listing.stdout.splitlines()
    ), listing.stdout
    done = new.rt(
        "staff", "reset", "dee", "--password-stdin", "--json", stdin="a new long password\n"
    )
    assert done.returncode == 0, done.stderr
    new.secrets["dee"] = json.loads(done.stdout)["totp_secret"]
    reply, _ = http_login(new, "dee", password="a new long password")
    assert reply.status_code == 303
    refused = new.rt(
        "staff",
        "add",
        "dee",
        "--role",
        "admin",
        "--name",
        "D",
        "--password-stdin",
        stdin="long enough password\n",
    )
    assert refused.returncode != 0 and "already" in refused.stderr
    assert "Traceback" not in refused.stderr


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "console.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "web.pem", folder / "web.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_console_over_https_with_the_districts_certificate(
    console_world: ConsoleWorld, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    console = ConsoleProcess(console_world.new.config_path, tmp_path / "https")
    console.url = f"https://127.0.0.1:{console.port}"
    console.start(extra=["--cert", str(cert), "--key", str(key)], verify=str(cert))
    try:
        reply = httpx.get(console.url + "/login", verify=str(cert))
        assert reply.status_code == 200
        cookie = reply.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert "script-src 'self'" in reply.headers["content-security-policy"]
        # Plain HTTP on the same port is not served.
        try:
            plain = httpx.get(f"http://127.0.0.1:{console.port}/login", timeout=5)
            assert plain.status_code >= 400
        except httpx.HTTPError:
            pass
    finally:
        console.stop()
