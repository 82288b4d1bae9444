"""The gateway publishes over TLS with a username and password, and keeps its readings
spooled when the broker refuses the credentials."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from pathlib import Path

import pytest

from firmware_sim.scenario import load_scenario
from firmware_sim.service import run_scenario
from tests.gateway.conftest import device_config, gateway_data, running_gateway, write_scenario
from weijian.demo.local_services import Broker, free_port, start_mosquitto


def make_certs(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    ca_key, ca, key, csr, cert = (folder / n for n in names)
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=weijian test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    ext = folder / "san.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


@pytest.fixture
def tls_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    ca, cert, key = make_certs(tmp_path / "certs")
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "gw-test", "s3cret"], check=True)
    tls_port = free_port()
    broker = start_mosquitto(
        tmp_path / "mosquitto",
        extra_config=(
            f"password_file {passwd}\n"
            f"listener {tls_port} 127.0.0.1\n"
            f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        ),
    )
    try:
        yield broker, tls_port, ca
    finally:
        broker.stop()


@pytest.mark.parametrize(("password", "should_arrive"), [("s3cret", True), ("wrong", False)])
async def test_tls_with_password(tmp_path, tls_broker, topic_root, gw_registry, collector_for, password,
                                 should_arrive):
    broker, tls_port, ca = tls_broker
    scenario = write_scenario(tmp_path / "one.toml", [
        {"site_id": "yc-cc-001", "device_id": "fr-01", "profile": "fridge-logger"},
    ])
    async with run_scenario(load_scenario(scenario), speed=0) as sim:
        tls = Broker(
            name="tls", proc=broker.proc, workdir=broker.workdir, log_file=broker.log_file, port=tls_port
        )
        data = gateway_data(tmp_path, tls, topic_root, gw_registry, [device_config(sim.endpoints[0])])
        data["mqtt"] |= {"username": "gw-test", "password": password, "tls_ca": str(ca)}
        collector = collector_for(broker, topic_root)  # plain listener, anonymous
        async with running_gateway(data):
            if should_arrive:
                await collector.wait_for(lambda c: len(c.readings()) >= 3, 10, "readings over TLS")
            else:
                await asyncio.sleep(1.5)
    if should_arrive:
        assert any(s["state"] == "online" for s in collector.statuses())
    else:
        assert collector.readings() == []
        db = sqlite3.connect(tmp_path / "spool.sqlite")
        queued = db.execute("SELECT count(*) FROM queue").fetchone()[0]
        db.close()
        assert queued >= 3  # refused: the readings wait in the spool
