"""Local coordination (SQLite tasks): a second `weijian ingest run` on the machine is a standby.

Both processes run the same configuration file (the same port, spool, dedup and tasks
database), as an institute's IT staff would start a spare; the test kills the first with
SIGKILL and counts what reaches InfluxDB.
"""

from __future__ import annotations

from pathlib import Path

from ingest.partitions import partition_registry
from tests.alerts.conftest import SECRET, Receiver
from tests.ingest.cluster import (
    IngestProcess,
    fridge_readings,
    fridge_registry,
    ingest_config,
    recent_start,
    wait_for,
)
from tests.ingest.conftest import count_points, publish
from weijian.demo.local_services import Broker, Influx
from weijian.registry import load_registry


def test_a_second_process_with_the_same_config_waits_then_takes_over(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, receiver: Receiver,
) -> None:
    registry_path = tmp_path / "registry.toml"
    devices = fridge_registry(registry_path, gateways=4, per_gateway=3)
    nonempty = sorted(p.index for p in partition_registry(load_registry(registry_path), 8) if p.sites)
    conf = ingest_config(
        tmp_path, "node", broker=mosquitto, influx=influxd, database=influx_db, root=topic_root,
        registry=registry_path, tasks_url=f"sqlite:///{tmp_path / 'tasks.sqlite'}", sms_url=receiver.url,
        secret=SECRET.decode(), deployment=f"sb-{topic_root.split('/')[0]}",
    )
    first, second = IngestProcess(conf, tmp_path / "first.log"), IngestProcess(conf, tmp_path / "second.log")
    minutes = 20
    messages = fridge_readings(topic_root, devices, set(), minutes, recent_start(minutes))
    half = len(messages) // 2
    try:
        first.start()
        wait_for(lambda: first.health().get("ready"), 60, "the first process to be ready")
        second.start()
        wait_for(lambda: "coordinator.standby" in second.log.read_text(), 30, "the second to wait")
        publish(mosquitto, messages[:half])
        wait_for(lambda: count_points(influxd, influx_db) == half, 60, "the first half stored")
        assert second.proc is not None and second.proc.poll() is None, second.log.read_text()[-3000:]
        assert first.partitions() == nonempty  # the port is still the first one's

        first.kill()
        publish(mosquitto, messages[half:])  # queued in the sessions while nobody reads them
        wait_for(lambda: second.partitions() == nonempty, 30, "the standby to hold every partition")
        wait_for(lambda: count_points(influxd, influx_db) == len(messages), 60, "every reading stored")
        # Every session subscribed (an alerts session notes its SUBACK on its next batch, up to
        # 0.5 s after the last reading was stored: ask until then rather than at one instant).
        wait_for(lambda: second.health()["ready"] is True, 30, "the standby ready")
        assert "coordinator.standby_active" in second.log.read_text()
    finally:
        first.kill()
        second.kill()
    assert count_points(influxd, influx_db) == len(messages)
