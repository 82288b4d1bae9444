"""The PUBLISH fast path's check of paho's internals: a paho without one of them (simulated by
asking for a name this paho lacks) makes ingest warn and use paho's own reader, and every
reading is still stored once and acknowledged (nothing redelivered after a restart)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ingest import receive
from tests.ingest.conftest import await_until, count_points, make_settings, publish, reading_payloads, running
from weijian.demo.local_services import Broker, Influx
from weijian.registry import Registry


def test_the_installed_paho_has_every_internal_the_fast_path_needs() -> None:
    # paho-mqtt is pinned to the release this was written against; a new one must pass this.
    assert receive.fast_path_problem() is None


def test_a_missing_internal_is_named() -> None:
    names = receive.FAST_PATH_NEEDS
    try:
        receive.FAST_PATH_NEEDS = (*names, ("Client", "_renamed_in_paho_3"))
        problem = receive.fast_path_problem()
    finally:
        receive.FAST_PATH_NEEDS = names
    assert problem is not None and "Client._renamed_in_paho_3" in problem


async def test_without_the_internals_ingest_warns_and_stores_every_reading_once(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str,
    registry: Registry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("WEIJIAN_INGEST__FAST_PATH", raising=False)  # the environment would win
    monkeypatch.setattr(receive, "FAST_PATH_NEEDS", (*receive.FAST_PATH_NEEDS, ("client", "_gone")))
    monkeypatch.setattr(receive, "_fast_path_checked", False)
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root, fast_path=True)
    n = 3000
    with caplog.at_level(logging.WARNING, logger="ingest.receive"):
        async with running(settings, registry) as service:
            assert service.intakes and not any(i.fast_path for i in service.intakes.values())
            await asyncio.to_thread(publish, mosquitto, reading_payloads(registry, topic_root, n))
            await await_until(lambda: count_points(influxd, influx_db) >= n, 60, f"{n} points")
    assert any(r.message == "mqtt.fast_path_unavailable" for r in caplog.records)
    # Acknowledged one by one through paho's ack(): a restart gets nothing redelivered.
    async with running(settings, registry) as service:
        await await_until(lambda: service.metrics.unacked._value.get() == 0, 10, "no unacked")
        assert service.metrics.readings_in._value.get() == 0
    assert count_points(influxd, influx_db) == n


async def test_fast_path_false_turns_it_off(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WEIJIAN_INGEST__FAST_PATH", raising=False)  # the environment would win
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root, fast_path=False)
    async with running(settings, registry) as service:
        assert not any(i.fast_path for i in service.intakes.values())
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root, fast_path=True)
    async with running(settings, registry) as service:
        assert all(i.fast_path for i in service.intakes.values())
