"""Prometheus metrics of one ingest process (served with ``/healthz`` by ``weijian.status_http``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["IngestMetrics"]


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
        self.parsed = Counter("ingest_messages_parsed", "Messages parsed and checked", registry=r)
        self.parses_shared = Counter(
            "ingest_parses_shared", "Messages a session took the other session's parse of, not parsing again",
            registry=r,
        )
        self.partitions_held = Gauge("ingest_partitions_held", "Partitions this process runs", registry=r)
        self.degraded = Gauge(
            "ingest_stage_degraded", "1 while a stage cannot do its work", ["stage"], registry=r
        )
        self.seq_missing = Gauge("ingest_seq_missing", "Readings missing by seq", ["gateway_id"], registry=r)
        self.mqtt_sessions = Counter(
            "ingest_mqtt_sessions", "Broker sessions established (1 + reconnections)", registry=r
        )
        self.mqtt_connected = Gauge("ingest_mqtt_connected", "1 while connected to the broker", registry=r)
