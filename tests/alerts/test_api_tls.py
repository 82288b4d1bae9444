"""`weijian tasks serve` as the institute runs it: HTTPS with its own certificate (a test CA
made here), plain HTTP refused for credentials from any address but loopback, and a config that
would serve tokens in clear on the network refused at start."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from alerts.accounts import Accounts, Role
from alerts.store import Store
from tests.alerts.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def own_address() -> str:
    """This machine's address on its network (not loopback): where a phone would reach it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent; the kernel picks the outgoing address
        address = str(s.getsockname()[0])
    assert not ipaddress.ip_address(address).is_loopback, "this test needs a non-loopback address"
    return address


def make_ca_and_cert(folder: Path, address: str) -> tuple[Path, Path, Path]:
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weijian test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
          .not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tasks.test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address(address)),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


def config(tmp_path: Path, url: str, host: str, port: int, **alerts: object) -> Path:
    lines = [f'[tasks]\nurl = "{url}"\n', "[alerts]", f'api_host = "{host}"', f"api_port = {port}"]
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else repr(str(v)).replace(chr(39), chr(34))}"
              for k, v in alerts.items()]
    lines += ["", "[[alerts.teams]]", 'name = "城关分局"', 'token = "tok-cg"', 'districts = ["chengguan"]']
    path = tmp_path / "tasks.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def serve(cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "weijian", "tasks", "serve", "--config", str(cfg)],
                            cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait(url: str, proc: subprocess.Popen[str], **kw: object) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        try:
            httpx.get(url, timeout=1, **kw)  # type: ignore[arg-type]
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_https_with_the_institutes_certificate(tmp_path: Path) -> None:
    address = own_address()
    url = f"sqlite:///{tmp_path / 'tasks.sqlite'}"
    Accounts(Store(url).engine).add("wang", name="王建国", phone="", team="", districts=["chengguan"],
                                    role=Role.INSPECTOR, password="tls-password-1")
    ca, cert, key = make_ca_and_cert(tmp_path, address)
    port = free_port()
    proc = serve(config(tmp_path, url, "0.0.0.0", port, api_tls_cert=cert, api_tls_key=key))
    try:
        base = f"https://{address}:{port}"
        trust = ssl.create_default_context(cafile=str(ca))
        wait(f"{base}/healthz", proc, verify=trust)
        with httpx.Client(base_url=base, verify=trust, timeout=10) as c:
            tokens = c.post("/auth/login", json={"username": "wang", "password": "tls-password-1"})
            assert tokens.status_code == 200
            me = c.get("/me", headers={"Authorization": f"Bearer {tokens.json()['access_token']}"})
            assert me.json()["username"] == "wang"
        try:  # a client that does not trust the institute's CA does not talk to it
            httpx.get(f"{base}/healthz", timeout=5)
            raise AssertionError("an untrusted certificate was accepted")
        except httpx.ConnectError:
            pass
    finally:
        proc.terminate()
        proc.wait(10)


def test_plain_http_refuses_credentials_off_loopback_and_clear_text_configs_do_not_start(
    tmp_path: Path,
) -> None:
    address = own_address()
    url = f"sqlite:///{tmp_path / 'tasks.sqlite'}"
    port = free_port()
    refused = subprocess.run([sys.executable, "-m", "weijian", "tasks", "serve", "--config",
                              str(config(tmp_path, url, "0.0.0.0", port))],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "alerts.api_host" in refused.stderr and "api_tls_cert" in refused.stderr
    proc = serve(config(tmp_path, url, "0.0.0.0", port, api_allow_plain_http=True))
    try:
        wait(f"http://127.0.0.1:{port}/healthz", proc)
        team = {"Authorization": "Bearer tok-cg"}
        assert httpx.get(f"http://127.0.0.1:{port}/tasks", headers=team).status_code == 200  # loopback
        off = httpx.get(f"http://{address}:{port}/tasks", headers=team)
        assert off.status_code == 403 and "HTTPS" in off.json()["detail"]
        login = httpx.post(f"http://{address}:{port}/auth/login", json={"username": "x", "password": "y" * 8})
        assert login.status_code == 403
        assert httpx.get(f"http://{address}:{port}/healthz").status_code == 200  # no credentials: served
    finally:
        proc.terminate()
        proc.wait(10)
