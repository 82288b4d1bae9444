"""Helpers for the ingest tests: settings, a fast publisher, point counts, an in-process service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ingest.service import AlertsStage, IngestService
from weijian.config import Settings
from weijian.demo.local_services import Broker, Influx
from weijian.registry import Registry, load_registry

KINDS = ("drinking_water", "swimming_pool", "medical_waste", "cold_chain")
UNITS = {"temperature": "degC"}


@pytest.fixture
def registry(example_registry: Path) -> Registry:
    return load_registry(example_registry)


def make_settings(
    tmp_path: Path, broker: Broker, influxd: Influx, database: str, topic_root: str, **ingest: Any
) -> Settings:
    data: dict[str, Any] = {
        "client_id": f"ingest-{topic_root.split('/')[0]}",
        "spool_path": str(tmp_path / "spool.sqlite"),
        "quarantine_path": str(tmp_path / "quarantine.sqlite"),
        "dedup_path": str(tmp_path / "dedup.sqlite"),
        "metrics_port": 0,
        "alerts": False,
        "batch_interval_s": 0.05,
    }
    data.update(ingest)
    return Settings(
        mqtt={"host": broker.host, "port": broker.port, "topic_root": topic_root},
        influx={"url": influxd.url, "database": database, "timeout_s": 2.0},
        ingest=data,
    )


def reading_payloads(
    registry: Registry, root: str, n: int, *, start: int = 0, base: datetime | None = None
) -> list[tuple[str, bytes]]:
    """``n`` valid readings over every registry device; each has its own ts and per-gateway seq.

    Reading ``i`` always gets the same seq and ts for the same ``start + i``, so publishing a
    range twice produces exact duplicates.
    """
    devices = list(registry.devices())
    base = base or datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
    out = []
    for i in range(start, start + n):
        site, dev = devices[i % len(devices)]
        gateway = registry.gateway_of(site.id, dev.id)
        # seq per gateway: readings of one gateway are spaced by the device count.
        seq = i
        ts = (base + timedelta(milliseconds=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = {
            "site_id": site.id,
            "device_id": dev.id,
            "gateway_id": gateway,
            "kind": site.kind.value,
            "ts": ts,
            "seq": seq,
            "metrics": {"temperature": {"value": 10 + (i % 100) / 10, "unit": "degC", "flag": "N"}},
        }
        out.append((f"{root}/{site.id}/{dev.id}/reading", json.dumps(body).encode()))
    return out


def publish(broker: Broker, messages: list[tuple[str, bytes]], *, timeout_s: float = 120) -> None:
    """Publish at QoS 1 and wait for every PUBACK."""
    done = threading.Event()
    acked = 0
    total = len(messages)

    room = threading.Semaphore(10_000)  # paho's mids wrap at 65535: keep fewer outstanding

    def on_publish(client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        nonlocal acked
        acked += 1
        room.release()
        if acked >= total:
            done.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_publish = on_publish
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            if not room.acquire(timeout=timeout_s):
                raise AssertionError(f"only {acked} of {total} publishes acknowledged")
            client.publish(topic, payload, qos=1)
        if total and not done.wait(timeout_s):
            raise AssertionError(f"only {acked} of {total} publishes acknowledged")
    finally:
        client.disconnect()
        client.loop_stop()


def count_points(influxd: Influx, database: str, *, since: str | None = None) -> int:
    """Points stored (``temperature`` of every kind), optionally only those at or after ``since``."""
    where = f" WHERE time >= '{since}'" if since else ""
    series = influxd.query(f'SELECT count("temperature") FROM {",".join(KINDS)}{where}', database)
    return sum(s["values"][0][1] for s in series)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def await_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@contextlib.asynccontextmanager
async def running(
    settings: Settings, registry: Registry, *, alerts: AlertsStage | None = None, **kwargs: Any
) -> AsyncIterator[IngestService]:
    """Run an ingest service in this event loop; SIGTERM-like stop on exit."""
    service = IngestService(settings, registry, alerts=alerts, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop), name="ingest-under-test")
    await await_until(lambda: service.ready or task.done(), 30, "ingest to claim and subscribe")
    if task.done():
        task.result()
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.contextmanager
def subscribed(broker: Broker, topic: str) -> Iterator[list[bytes]]:
    """Collect payloads published on ``topic`` while the block runs."""
    got: list[bytes] = []
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        yield got
    finally:
        client.disconnect()
        client.loop_stop()
