"""No message can crash ingest, and a gateway speaks only for itself (real Mosquitto and InfluxDB)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest.influx_v1 import InfluxV1Writer
from tests.ingest.conftest import await_until, count_points, make_settings, publish, running
from weijian.demo.local_services import Broker, Influx
from weijian.registry import Registry


def _reading(root: str, seq: int, *, gateway: str = "gw-chengguan-water", minute: int = 0,
             site: str = "yc-water-001", device: str = "wq-01") -> tuple[str, bytes]:
    ts = (datetime.now(UTC) - timedelta(minutes=30 - minute)).isoformat()
    body = {"site_id": site, "device_id": device, "gateway_id": gateway, "kind": "drinking_water",
            "ts": ts, "seq": seq, "metrics": {"temperature": {"value": 12.0, "unit": "degC", "flag": "N"}}}
    return f"{root}/{site}/{device}/reading", json.dumps(body).encode()


async def test_seq_beyond_int64_and_forged_gateways_are_quarantined_and_the_real_gateway_loses_nothing(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, registry: Registry
) -> None:
    hostile = [
        _reading(topic_root, 2**63),  # once an OverflowError in the dedup store, and a crash loop
        _reading(topic_root, 2**63 + 5, minute=1),
        _reading(topic_root, 10, gateway="gw-xinhe", minute=2),  # another registered gateway
        _reading(topic_root, 11, gateway="gw-nobody", minute=3),  # a gateway unknown to the registry
    ]
    real = [_reading(topic_root, seq, minute=10 + seq) for seq in range(10, 20)]  # the same seqs
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root)
    async with running(settings, registry) as service:
        await asyncio.to_thread(publish, mosquitto, hostile)
        await await_until(lambda: sum(service.quarantine.counts().values()) >= 4, 20, "the quarantine")
        await asyncio.to_thread(publish, mosquitto, real)
        await await_until(lambda: count_points(influxd, influx_db) >= 10, 20, "the real readings")
        counts = service.quarantine.counts()
        metrics = service.metrics.registry
        series = {s.labels.get("gateway_id") for m in metrics.collect() if m.name == "ingest_seq_missing"
                  for s in m.samples}
    assert counts == {"wrong_type": 2, "gateway_mismatch": 2}
    assert count_points(influxd, influx_db) == 10  # none of the real ones taken as a duplicate
    assert "gw-nobody" not in series  # metrics series only for registry gateways
    rows = service.quarantine.list(reason="gateway_mismatch")
    assert {"gw-xinhe" in r.detail or "gw-nobody" in r.detail for r in rows} == {True}


class _Brittle(InfluxV1Writer):
    """The real InfluxDB writer, with a fault injected for one site's batches."""

    async def write(self, body: bytes) -> None:
        if b"site_id=yc-water-002" in body:
            raise RuntimeError("injected: the writer failed on this batch")
        await super().write(body)


async def test_a_batch_whose_storage_raises_is_quarantined_acknowledged_and_ingest_goes_on(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, registry: Registry
) -> None:
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root)
    poison = [_reading(topic_root, 1, site="yc-water-002", gateway="gw-chengguan-water")]
    good = [_reading(topic_root, seq, minute=seq) for seq in range(2, 12)]
    async with running(settings, registry, writer=_Brittle(settings.influx)) as service:
        await asyncio.to_thread(publish, mosquitto, poison)
        await await_until(lambda: service.quarantine.counts().get("store_failed") == 1, 20, "the quarantine")
        await asyncio.to_thread(publish, mosquitto, good)
        await await_until(lambda: count_points(influxd, influx_db) >= 10, 20, "the good readings")
        assert service.metrics.unacked._value.get() == 0  # the poison batch was acknowledged too
    # A second run gets no redelivery of the poison message: it was acknowledged.
    async with running(settings, registry, writer=_Brittle(settings.influx)) as service:
        await asyncio.sleep(2)
        assert service.quarantine.counts().get("store_failed") == 1
    assert count_points(influxd, influx_db) == 10


async def test_times_utc_cannot_hold_and_unbounded_status_times_are_quarantined_not_judged(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, registry: Registry
) -> None:
    # Year 1 east of UTC and 9999 west of it overflow a conversion to UTC: once an internal
    # error for a reading, and for a gateway status an alert that existed only in memory.
    gateway = "gw-chengguan-water"
    status_topic = f"{topic_root}/gateways/{gateway}/status"

    def status(ts: str) -> tuple[str, bytes]:
        return status_topic, json.dumps({"gateway_id": gateway, "state": "offline", "ts": ts}).encode()

    topic, body = _reading(topic_root, 1)
    early = json.loads(body) | {"ts": "0001-01-01T00:00:00+01:00"}
    late = json.loads(body) | {"ts": "9999-12-31T23:59:59-01:00", "seq": 2}
    hostile = [(topic, json.dumps(early).encode()), (topic, json.dumps(late).encode()),
               status("0001-01-01T00:00:00+01:00"), status("2200-01-01T00:00:00Z")]
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root, alerts=True)
    settings = settings.model_copy(
        update={"tasks": settings.tasks.model_copy(update={"url": f"sqlite:///{tmp_path / 'tasks.sqlite'}"})}
    )

    def offline() -> bool:
        return any(gateway in j.state.offline for j in service._judges.values())  # type: ignore[attr-defined]

    async with running(settings, registry) as service:
        await asyncio.to_thread(publish, mosquitto, hostile)
        await await_until(lambda: sum(service.quarantine.counts().values()) >= 4, 20, "the quarantine")
        assert service.quarantine.counts() == {"ts_out_of_range": 2, "future_timestamp": 2}
        await asyncio.sleep(1)  # the alerts sessions have had these too
        assert not offline()
        await asyncio.to_thread(publish, mosquitto, [status(datetime.now(UTC).isoformat())])
        await await_until(offline, 20, "the real offline status judged")
        assert service.degraded() == []
