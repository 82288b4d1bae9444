"""Prometheus metrics of one ingest process and the ``/healthz`` + ``/metrics`` HTTP endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["IngestMetrics", "serve_http"]

log = logging.getLogger(__name__)


class IngestMetrics:
    """Every metric ingest exports, in a registry of its own (several services per test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.readings_in = Counter("ingest_readings_in", "Reading messages received", registry=r)
        self.accepted = Counter("ingest_readings_accepted", "Valid, new readings", registry=r)
        self.rejected = Counter("ingest_rejected", "Messages quarantined", ["reason"], registry=r)
        self.duplicates = Counter("ingest_duplicates", "Readings dropped as duplicates", registry=r)
        self.stored = Counter("ingest_points_stored", "Points written to InfluxDB", registry=r)
        self.store_rejected = Counter("ingest_store_rejected_batches", "Batches InfluxDB refused", registry=r)
        self.batch_size = Histogram(
            "ingest_batch_points",
            "Points per batch",
            registry=r,
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000),
        )
        self.write_latency = Histogram("ingest_write_seconds", "InfluxDB write latency", registry=r)
        self.spool_depth = Gauge("ingest_spool_points", "Points waiting in the spool", registry=r)
        self.unacked = Gauge("ingest_unacked_messages", "Messages received, not yet acknowledged", registry=r)
        self.consumer_lag = Gauge(
            "ingest_alerts_lag", "Readings judged by this process's alert sessions, not yet acknowledged",
            registry=r,
        )
        self.alerts_judged = Counter("ingest_alerts_judged", "Readings and statuses judged", registry=r)
        self.partitions_held = Gauge("ingest_partitions_held", "Partitions this process runs", registry=r)
        self.degraded = Gauge(
            "ingest_stage_degraded", "1 while a stage cannot do its work", ["stage"], registry=r
        )
        self.seq_missing = Gauge("ingest_seq_missing", "Readings missing by seq", ["gateway_id"], registry=r)
        self.mqtt_sessions = Counter(
            "ingest_mqtt_sessions", "Broker sessions established (1 + reconnections)", registry=r
        )
        self.mqtt_connected = Gauge("ingest_mqtt_connected", "1 while connected to the broker", registry=r)


async def _handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    metrics: IngestMetrics,
    health: Callable[[], dict[str, Any]],
) -> None:
    try:
        async with asyncio.timeout(5):
            request = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
        path = request.split(b" ")[1] if request.count(b" ") >= 2 else b"/"
        if path == b"/metrics":
            status, ctype, body = 200, "text/plain; version=0.0.4", generate_latest(metrics.registry)
        elif path == b"/healthz":
            state = health()
            status, ctype = (200 if state.get("ok") else 503), "application/json"
            body = json.dumps(state).encode()
        else:
            status, ctype, body = 404, "text/plain", b"not found\n"
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    except (TimeoutError, ConnectionError, IndexError):
        pass
    finally:
        writer.close()


async def serve_http(
    host: str, port: int, metrics: IngestMetrics, health: Callable[[], dict[str, Any]]
) -> asyncio.Server:
    """Start the endpoint; the caller closes the returned server."""
    server = await asyncio.start_server(lambda r, w: _handle(r, w, metrics, health), host, port)
    log.info("metrics.listening", extra={"host": host, "port": server.sockets[0].getsockname()[1]})
    return server
