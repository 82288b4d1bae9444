"""InfluxDB answering 401, 403 or 404 is a store that is unavailable, not a batch to refuse.

A database that does not exist yet, or a wrong password, is fixed by the operator; until then
ingest spools what it receives (and /healthz says ``influx`` is degraded), and writes it all
once InfluxDB takes it. Only 400 (bad line protocol, a field type conflict) is permanent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.influx_v1 import InfluxV1Writer
from ingest.influx_v2 import InfluxV2Writer
from ingest.metrics import IngestMetrics
from ingest.quarantine import QuarantineStore
from ingest.spool import PointSpool
from ingest.store import Storage
from tests.ingest.conftest import await_until, count_points, make_settings, publish, reading_payloads, running
from weijian.config import InfluxSettings
from weijian.demo.local_services import Broker, Influx, start_influxd
from weijian.errors import InfluxRejected, InfluxUnavailable
from weijian.registry import Registry

LINE = b"cold_chain,site_id=s1 temperature=4.0 1700000000000000000"


def _quarantined(path: Path) -> int:
    if not path.exists():
        return 0
    store = QuarantineStore(path)
    try:
        return sum(store.counts().values())
    finally:
        store.close()


async def test_readings_for_a_database_created_later_are_spooled_then_stored_once(
    tmp_path: Path,
    mosquitto: Broker,
    influxd: Influx,
    topic_root: str,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = f"t_{uuid.uuid4().hex[:12]}"  # not created yet
    settings = make_settings(
        tmp_path, mosquitto, influxd, database, topic_root, write_retries=1, backoff_max_s=0.5
    )
    messages = reading_payloads(registry, topic_root, 300)
    caplog.set_level(logging.INFO, logger="ingest.store")
    try:
        async with running(settings, registry) as service:
            healthz = f"http://127.0.0.1:{service.http_port}/healthz"
            await asyncio.to_thread(publish, mosquitto, messages)
            await await_until(lambda: service.spool.points == len(messages), 30, "every reading spooled")
            health = (await asyncio.to_thread(httpx.get, healthz, timeout=10)).json()
            assert health["spool_points"] == len(messages)
            assert "influx" in health["degraded"] and health["influx_healthy"] is False
            assert _quarantined(settings.ingest.quarantine_path) == 0
            await asyncio.sleep(1.5)  # the drain retries a few times meanwhile
            errors = [r for r in caplog.records if r.getMessage() == "influx.unavailable"]
            assert len(errors) == 1, "one error on entering the state, not one per retry"
            assert "[influx] database" in errors[0].__dict__["detail"]
            assert "database not found" in errors[0].__dict__["detail"]

            await asyncio.to_thread(influxd.query, f'CREATE DATABASE "{database}"')
            await await_until(
                lambda: service.spool.points == 0 and "influx" not in service.degraded(), 30,
                "the spool to drain into the new database",
            )
            health = (await asyncio.to_thread(httpx.get, healthz, timeout=10)).json()
            assert health["degraded"] == [] and health["spool_points"] == 0
        assert await asyncio.to_thread(count_points, influxd, database) == len(messages)
        assert _quarantined(settings.ingest.quarantine_path) == 0
        assert not [r for r in caplog.records if r.getMessage() == "store.rejected"]
    finally:
        await asyncio.to_thread(influxd.query, f'DROP DATABASE "{database}"')


async def test_v1_writer_against_a_real_influxd(influxd: Influx, influx_db: str) -> None:
    missing = InfluxV1Writer(InfluxSettings(url=influxd.url, database=f"nope_{uuid.uuid4().hex[:8]}"))
    with pytest.raises(InfluxUnavailable, match=r"404.*\[influx\] database"):
        await missing.write(LINE)
    await missing.aclose()
    writer = InfluxV1Writer(InfluxSettings(url=influxd.url, database=influx_db))
    await writer.write(LINE)
    with pytest.raises(InfluxRejected, match="400"):  # a field type conflict stays permanent
        await writer.write(b'cold_chain,site_id=s1 temperature="warm" 1700000000000000001')
    with pytest.raises(InfluxRejected, match="400"):  # and so does bad line protocol
        await writer.write(b"cold_chain,,, temperature")
    await writer.aclose()


@pytest.fixture(scope="module")
def influxd_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    """A real InfluxDB 1.x with ``auth-enabled``, an admin and a user who may not write."""
    influx = start_influxd(tmp_path_factory.mktemp("influxd-auth"))
    try:
        influx.stop()
        conf = influx.workdir / "influxdb.conf"
        conf.write_text(conf.read_text().replace("[http]\n", "[http]\n  auth-enabled = true\n"))
        influx.start()
        # With auth on and no user yet, InfluxDB 1.x accepts only the first admin's creation.
        first_admin = "CREATE USER admin WITH PASSWORD 'adm' WITH ALL PRIVILEGES"
        httpx.post(f"{influx.url}/query", params={"q": first_admin}, timeout=30).raise_for_status()
        for q in ('CREATE DATABASE "wj"', "CREATE USER reader WITH PASSWORD 'rd'",
                  'GRANT READ ON "wj" TO reader'):
            httpx.post(f"{influx.url}/query", params={"q": q, "u": "admin", "p": "adm"},
                       timeout=30).raise_for_status()
        yield influx
    finally:
        influx.stop()


async def test_v1_writer_bad_credentials_are_unavailable(influxd_with_auth: Influx) -> None:
    url = influxd_with_auth.url
    cases = [
        ({"username": "admin", "password": "wrong"}, "401"),
        ({}, "401"),
        ({"username": "reader", "password": "rd"}, "403"),
    ]
    for creds, status in cases:
        writer = InfluxV1Writer(InfluxSettings(url=url, database="wj", **creds))
        with pytest.raises(InfluxUnavailable, match=rf"{status}.*\[influx\] username.*password"):
            await writer.write(LINE)
        await writer.aclose()
    writer = InfluxV1Writer(InfluxSettings(url=url, database="wj", username="admin", password="adm"))
    await writer.write(LINE)
    await writer.aclose()


class _Answer(BaseHTTPRequestHandler):
    status = 204
    body = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def v2_server() -> Iterator[tuple[str, type[_Answer]]]:
    # InfluxDB 2.x cannot run here (Debian ships 1.6.7): a local server gives its documented answers.
    handler = type("H", (_Answer,), {})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()


async def test_v2_writer_401_403_404_are_unavailable_400_is_permanent(
    v2_server: tuple[str, type[_Answer]],
) -> None:
    url, handler = v2_server
    writer = InfluxV2Writer(InfluxSettings(api="v2", url=url, org="o", bucket="b", token="t"))
    answers = [
        (401, b'{"code":"unauthorized","message":"unauthorized access"}', r"401.*\[influx\] token"),
        (403, b'{"code":"forbidden","message":"insufficient permissions"}', r"403.*\[influx\] token"),
        (404, b'{"code":"not found","message":"bucket \\"b\\" not found"}', r"404.*\[influx\] bucket.*org"),
    ]
    for status, body, pattern in answers:
        handler.status, handler.body = status, body
        with pytest.raises(InfluxUnavailable, match=pattern):
            await writer.write(LINE)
    handler.status, handler.body = 400, b'{"code":"invalid","message":"unable to parse"}'
    with pytest.raises(InfluxRejected):
        await writer.write(LINE)
    await writer.aclose()


async def test_each_new_cause_is_logged_once_and_the_spool_drains_when_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A database that is missing (404), then InfluxDB stopped (connection refused), then started
    # with the database created: three changes, three log lines, whatever the number of retries.
    influx = await asyncio.to_thread(start_influxd, tmp_path / "influxd")
    try:
        spool = PointSpool(tmp_path / "spool.sqlite", 10_000)
        await spool.open()
        storage = Storage(InfluxV1Writer(InfluxSettings(url=influx.url, database="later", timeout_s=2)),
                          spool, IngestMetrics(), retries=0, backoff_max_s=0.2, on_rejected=_never)
        caplog.set_level(logging.INFO, logger="ingest.store")
        drain = asyncio.create_task(storage.drain())
        try:
            await storage.store(LINE, 1)
            await asyncio.sleep(1)  # the drain retries several times
            await asyncio.to_thread(influx.stop)
            await asyncio.sleep(1)
            assert spool.points == 1 and not storage.is_healthy
            await asyncio.to_thread(influx.start)
            await asyncio.to_thread(influx.query, 'CREATE DATABASE "later"')
            await await_until(lambda: spool.points == 0 and storage.is_healthy, 30, "the spool to drain")
        finally:
            drain.cancel()
            await storage.close_writer()
            spool.close()
        events = [(r.getMessage(), r.__dict__.get("detail", "")) for r in caplog.records]
        names = [name for name, _ in events]
        # The causes in between depend on timing: a write in flight when InfluxDB stops may end
        # in a ReadError before the ConnectErrors, and between InfluxDB's start and the CREATE
        # DATABASE a retry may meet the 404 again. Each is a change of cause, logged once; what
        # must never happen is one cause logged twice in a row, or once per retry.
        assert names[-1] == "influx.available" and names.count("influx.available") == 1
        causes = [detail for name, detail in events if name == "influx.unavailable"]
        assert 2 <= len(causes) <= 4, names
        assert all(a != b for a, b in pairwise(causes)), causes
        assert "404" in causes[0] and "[influx] database" in causes[0]
        assert any("ConnectError" in c for c in causes[1:]), causes
        series = await asyncio.to_thread(influx.query, "SELECT count(temperature) FROM cold_chain", "later")
        assert series[0]["values"][0][1] == 1
    finally:
        await asyncio.to_thread(influx.stop)


async def _never(body: bytes, detail: str) -> None:
    raise AssertionError(f"refused as permanent: {detail}")
