"""ingest with the real alerts stage wired in (``[ingest] alerts = true``)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.ingest.conftest import await_until, make_settings, publish, running, subscribed
from weijian.contract import Flag, Kind, MetricValue, Reading, encode_reading, reading_topic
from weijian.demo.local_services import Broker, Influx
from weijian.registry import Registry


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
