"""Review 5, through a running ingest (real Mosquitto and InfluxDB): refused readings are
quarantined with their reason and write no point; a kept reading's time is truncated to the
microsecond, as docs/ingest.md says.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.ingest.conftest import KINDS, await_until, make_settings, publish, running
from weijian.demo.local_services import Broker, Influx
from weijian.registry import Registry


def _reading(root: str, seq: int, ts: str, **changes: Any) -> tuple[str, bytes]:
    body: dict[str, Any] = {
        "site_id": "yc-water-001", "device_id": "wq-01", "gateway_id": "gw-chengguan-water",
        "kind": "drinking_water", "ts": ts, "seq": seq,
        "metrics": {"temperature": {"value": 12.0, "unit": "degC", "flag": "N"}},
    }
    body.update(changes)
    return f"{root}/yc-water-001/wq-01/reading", json.dumps(body).encode()


def _points(influxd: Influx, database: str) -> dict[str, list[int]]:
    """Stored times (integer nanoseconds) per measurement."""
    out: dict[str, list[int]] = {}
    for kind in KINDS:
        for series in influxd.query(f'SELECT "temperature" FROM "{kind}"', database, epoch="ns"):
            out[kind] = [row[0] for row in series["values"]]
    return out


async def test_refused_timestamps_and_kinds_are_quarantined_with_their_reason_and_store_nothing(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, registry: Registry
) -> None:
    recent = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    epoch = str(int(recent.timestamp()))
    refused = [
        _reading(topic_root, 1, epoch),  # an epoch string: once stored at that instant
        _reading(topic_root, 2, recent.strftime("%Y-%m-%dT%H:%M:%S+0000")),  # no colon in the offset
        _reading(topic_root, 3, recent.strftime("%Y-%m-%dT%H:%M:%S")),  # no offset
        _reading(topic_root, 4, recent.isoformat(), kind="cold_chain",  # a drinking_water device
                 metrics={"temperature": {"value": 5.0, "unit": "degC", "flag": "N"}}),
    ]
    kept_ts = recent.strftime("%Y-%m-%dT%H:%M:%S") + ".123456789Z"
    kept = [_reading(topic_root, 5, kept_ts)]
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root)
    async with running(settings, registry) as service:
        await asyncio.to_thread(publish, mosquitto, refused + kept)
        await await_until(lambda: sum(service.quarantine.counts().values()) >= 4, 20, "the quarantine")
        await await_until(lambda: bool(_points(influxd, influx_db)), 20, "the valid reading stored")
        counts = service.quarantine.counts()
        rows = {json.loads(r.payload)["seq"]: r for r in service.quarantine.list(limit=10)}
    assert counts == {"wrong_type": 2, "naive_timestamp": 1, "kind_mismatch": 1}
    assert {seq: (r.reason, r.field) for seq, r in rows.items()} == {
        1: ("wrong_type", "ts"), 2: ("wrong_type", "ts"),
        3: ("naive_timestamp", "ts"), 4: ("kind_mismatch", "kind"),
    }
    assert rows[4].payload == refused[3][1]  # the raw payload is kept for inspection
    # Only the valid reading was written, at its time truncated to the microsecond.
    whole_ns = int(recent.timestamp()) * 10**9
    assert _points(influxd, influx_db) == {"drinking_water": [whole_ns + 123_456_000]}
