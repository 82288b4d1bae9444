"""ingest with the real alerts stage wired in (``[ingest] alerts = true``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.alerts.conftest import SECRET, Receiver
from tests.ingest.cluster import REPO, fridge_readings, fridge_registry, ingest_config, recent_start
from tests.ingest.conftest import (
    await_until,
    count_points,
    make_settings,
    publish,
    reading_payloads,
    running,
    subscribed,
)
from weijian.contract import Flag, Kind, MetricValue, Reading, encode_reading, reading_topic
from weijian.demo.local_services import Broker, Influx
from weijian.registry import Registry, load_registry


async def test_power_loss_reading_becomes_an_alert_on_mqtt_and_in_influxdb(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, registry: Registry
) -> None:
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root, alerts=True)
    settings = settings.model_copy(
        update={"tasks": settings.tasks.model_copy(update={"url": f"sqlite:///{tmp_path / 'tasks.sqlite'}"})}
    )
    ts = datetime.now(UTC) - timedelta(seconds=5)
    reading = Reading(
        site_id="yc-cc-001",
        device_id="fr-01",
        gateway_id="gw-chengguan-public",
        kind=Kind.COLD_CHAIN,
        ts=ts,
        seq=1,
        metrics={
            "temperature": MetricValue(value=5.0, unit="degC", flag=Flag.NORMAL),
            "power_ok": MetricValue(value=0.0, unit="0/1", flag=Flag.NORMAL),
        },
    )
    with subscribed(mosquitto, f"{topic_root}/alerts/#") as events:
        async with running(settings, registry) as service:
            assert service._alerts is not None  # the real alerts stage was loaded
            message = (reading_topic(topic_root, "yc-cc-001", "fr-01"), encode_reading(reading))
            await asyncio.to_thread(publish, mosquitto, [message])
            await await_until(lambda: len(events) >= 1, 20, "an alert event on MQTT")
            await await_until(
                lambda: bool(influxd.query('SELECT count("state") FROM alert', influx_db)),
                20,
                "the alert point",
            )
    event = json.loads(events[0])
    assert event["site_id"] == "yc-cc-001" and event["rule"] and event["state"] in ("firing", "pending")
    point = influxd.query("SELECT * FROM alert", influx_db)[0]
    assert "district" in point["columns"] and "chengguan" in point["values"][0]


def test_an_alerts_stage_that_cannot_start_stops_ingest_run_with_exit_code_2(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, receiver: Receiver,
) -> None:
    registry_path = tmp_path / "registry.toml"
    fridge_registry(registry_path, gateways=2, per_gateway=2)
    conf = ingest_config(
        tmp_path, "node", broker=mosquitto, influx=influxd, database=influx_db, root=topic_root,
        registry=registry_path, tasks_url=f"sqlite:///{tmp_path / 'tasks.sqlite'}", sms_url=receiver.url,
        secret=SECRET.decode(), deployment="bad-rules",
    )
    empty = tmp_path / "rules"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "weijian.cli", "ingest", "run", "--config", str(conf)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "WEIJIAN_ALERTS__RULES_DIR": str(empty)},
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{empty}: no rule packs" in done.stderr


async def test_two_deployments_on_one_tasks_database_keep_their_own_engine_states(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Two counties' deployments (two names) share one tasks database. Their partitions' state
    # rows were once keyed by the layout alone, so each takeover fenced the other one out.
    tasks = f"sqlite:///{tmp_path / 'tasks.sqlite'}"
    prefix = topic_root.split("/")[0]
    deployments = []
    for name in ("county-a", "county-b"):
        work = tmp_path / name
        work.mkdir()
        s = make_settings(work, mosquitto, influxd, influx_db, f"{prefix}-{name}/v1", alerts=True,
                          client_id=f"{name}-{prefix}")
        deployments.append(s.model_copy(update={"tasks": s.tasks.model_copy(update={"url": tasks})}))
    n = 300
    caplog.set_level(logging.WARNING, logger="ingest.service")
    async with running(deployments[0], registry), running(deployments[1], registry):
        for i, s in enumerate(deployments):  # other times: InfluxDB would take them for the same points
            await asyncio.to_thread(publish, mosquitto, reading_payloads(registry, s.mqtt.topic_root, n,
                                                                         start=i * n))
        await await_until(lambda: count_points(influxd, influx_db) >= 2 * n, 30, "both deployments' readings")
        await asyncio.sleep(2)  # several checkpoints of every partition of both
    lost = [r for r in caplog.records if r.getMessage() in ("partition.lost", "partition.taken_over")]
    assert lost == []
    engine = create_engine(tasks)
    with engine.connect() as conn:
        keys = [k for (k,) in conn.execute(text("SELECT key FROM alerts_engine_state"))]
    engine.dispose()
    for s in deployments:
        assert any(k.startswith(f"{s.ingest.client_id}/") for k in keys), keys


async def test_the_end_of_a_burst_is_acknowledged_when_the_session_idles_not_at_the_next_save(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A slow tasks database (each save takes 0.4 s more) spaces a partition's saves 5 s apart
    # (20 x the last save's duration, at most 5 s). In-band readings change no alert, so only a
    # save acknowledges them. Before, the end of a burst waited for that next spaced save; an
    # idle session now saves a quarter of the spacing after the last one (1.25 s here).
    from alerts.service import AlertService

    slow = AlertService._record_now

    def record_slowly(self: AlertService, *args: Any) -> None:
        time.sleep(0.4)
        slow(self, *args)

    monkeypatch.setattr(AlertService, "_record_now", record_slowly)
    registry_path = tmp_path / "registry.toml"
    devices = fridge_registry(registry_path, gateways=1, per_gateway=3)
    registry = load_registry(registry_path)
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root, alerts=True, partitions=1)
    settings = settings.model_copy(update={
        "tasks": settings.tasks.model_copy(update={"url": f"sqlite:///{tmp_path / 'tasks.sqlite'}"}),
        "alerts": settings.alerts.model_copy(update={"tick_s": 60.0}),
    })
    first, second = (fridge_readings(topic_root, devices, set(), 20, recent_start(21))[i::2] for i in (0, 1))
    async with running(settings, registry) as service:
        for burst in (first, second):  # the first burst's save sets the spacing for the second
            await asyncio.to_thread(publish, mosquitto, burst)
            judged = len(first) if burst is first else len(first) + len(second)
            await await_until(lambda n=judged: service.metrics.alerts_judged._value.get() >= n, 30,
                              "the burst judged")
            began = time.monotonic()
            await await_until(lambda: service.health()["alerts_lag"] == 0, 10, "the burst acknowledged")
            took = time.monotonic() - began
        engine = create_engine(settings.tasks.url)
        with engine.connect() as conn:
            alerts = conn.execute(text("SELECT count(*) FROM alerts_alerts")).scalar_one()
        engine.dispose()
    assert alerts == 0  # nothing fired: it was a save that acknowledged them
    # The second burst: idle 0.5 s, then a quarter of the 5 s spacing after the first burst's
    # save, then the slow save itself: about 2 s; at the next spaced save it would be over 4 s.
    assert took < 3.5, took
