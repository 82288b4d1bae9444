"""The real services the suite stands on: Mosquitto, InfluxDB 1.x, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import queue
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest

from weijian.contract import (
    Flag,
    Kind,
    MetricValue,
    Reading,
    decode_reading,
    encode_reading,
    reading_subscription,
    reading_topic,
)
from weijian.demo.local_services import Broker, Influx, free_port, start_influxd, start_mosquitto


def sample_reading(seq: int = 1) -> Reading:
    return Reading(
        site_id="yc-cc-001", device_id="fr-01", gateway_id="gw-chengguan-public",
        kind=Kind.COLD_CHAIN, ts=datetime(2026, 11, 22, 3, 0, 0, 250000, tzinfo=UTC), seq=seq,
        metrics={
            "temperature": MetricValue(value=4.6, unit="degC"),
            "door_open": MetricValue(value=0.0, unit="0/1"),
            "power_ok": MetricValue(value=None, unit="0/1", flag=Flag.COMM_FAILURE),
        },
    )


def connected_client(broker: Broker, client_id: str) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def test_a_reading_published_with_paho_arrives_and_parses(mosquitto: Broker, topic_root: str) -> None:
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = queue.Queue[int]()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
    sub.on_message = lambda _c, _u, msg: received.put(msg)
    sub.on_subscribe = lambda _c, _u, mid, _rc, _p: subscribed.put(mid)
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    pub = connected_client(mosquitto, "test-pub")
    try:
        sub.subscribe(reading_subscription(topic_root), qos=1)
        subscribed.get(timeout=5)
        reading = sample_reading()
        info = pub.publish(reading_topic(topic_root, reading.site_id, reading.device_id),
                           encode_reading(reading), qos=1)
        info.wait_for_publish(timeout=5)
        assert info.is_published()
        msg = received.get(timeout=5)
        assert msg.qos == 1
        decoded = decode_reading(msg.topic, msg.payload, now=datetime.now(UTC), root=topic_root)
        assert decoded == reading
        assert json.loads(msg.payload)["metrics"]["power_ok"] == {
            "value": None, "unit": "0/1", "flag": "B"}
    finally:
        for client in (sub, pub):
            client.disconnect()
            client.loop_stop()


def test_line_protocol_written_to_influxdb_reads_back(influxd: Influx, influx_db: str) -> None:
    lines = (
        "cold_chain,site_id=yc-cc-001,device_id=fr-01,district=chengguan temperature=4.6 "
        "1795316400000000000\n"
        "cold_chain,site_id=yc-cc-001,device_id=fr-01,district=chengguan temperature=9.1,"
        'temperature_flag="T" 1795316460000000000\n'
    )
    response = httpx.post(f"{influxd.url}/write", params={"db": influx_db, "precision": "ns"},
                          content=lines)
    assert response.status_code == 204, response.text
    series = influxd.query(
        "SELECT temperature, temperature_flag FROM cold_chain WHERE site_id = 'yc-cc-001'",
        influx_db)
    assert series[0]["columns"] == ["time", "temperature", "temperature_flag"]
    assert series[0]["values"] == [
        ["2026-11-22T03:00:00Z", 4.6, None],
        ["2026-11-22T03:01:00Z", 9.1, "T"],
    ]


def test_influx_databases_are_isolated_per_test(influxd: Influx, influx_db: str) -> None:
    assert influxd.query("SHOW MEASUREMENTS", influx_db) == []


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_services_stop_without_leaving_processes_or_ports(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path / "mq")
    influx = start_influxd(tmp_path / "ix")
    pids = [broker.pid, influx.pid]
    ports = [broker.port, influx.port]
    broker.stop()
    influx.stop()
    assert not any(process_exists(pid) for pid in pids)
    for port in ports:  # the port can be bound again at once
        again = start_mosquitto(tmp_path / f"again-{port}", port=port)
        again.stop()


def test_a_stopped_broker_restarts_on_its_port_keeping_persistent_sessions(
    fresh_mosquitto: Broker, topic_root: str
) -> None:
    topic = f"{topic_root}/x/y/reading"
    got: queue.Queue[bytes] = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="persistent-sub",
                      clean_session=False)
    acked: queue.Queue[int] = queue.Queue()
    sub.on_message = lambda _c, _u, msg: got.put(msg.payload)
    sub.on_subscribe = lambda _c, _u, mid, _rc, _p: acked.put(mid)
    sub.connect(fresh_mosquitto.host, fresh_mosquitto.port)
    sub.loop_start()
    sub.subscribe(topic, qos=1)
    acked.get(timeout=5)
    sub.disconnect()
    sub.loop_stop()
    pub = connected_client(fresh_mosquitto, "pub")
    pub.publish(topic, b"while-away", qos=1).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    fresh_mosquitto.stop()
    fresh_mosquitto.start()
    sub.reconnect()
    sub.loop_start()
    try:
        assert got.get(timeout=5) == b"while-away"
    finally:
        sub.disconnect()
        sub.loop_stop()


def test_sqlite_fixture_is_a_writable_file(sqlite_url: str) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
    assert Path(path).stat().st_size > 0


def test_postgres_fixture_gives_a_private_schema(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()
        assert schema is not None and schema[0].startswith("weijian_test_")
        conn.execute("CREATE TABLE probe (id int)")
        conn.execute("INSERT INTO probe VALUES (1)")
        row = conn.execute(f"SELECT count(*) FROM {schema[0]}.probe").fetchone()
        assert row == (1,)
        conn.rollback()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
