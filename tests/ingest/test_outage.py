"""The broker side of the outage promise: examples/mosquitto.conf keeps what ingest misses."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from tests.ingest.conftest import await_until, count_points, make_settings, publish, reading_payloads, running
from weijian.demo.local_services import Broker, Influx, start_influxd, start_mosquitto
from weijian.registry import Registry

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "mosquitto.conf"
LIMITS = ("max_queued_messages", "max_queued_bytes", "max_packet_size", "max_inflight_messages")


def _shipped_limits() -> str:
    lines = [line for line in SHIPPED.read_text().splitlines() if line.split(" ")[0] in LIMITS]
    assert len(lines) == len(LIMITS)
    return "\n".join(lines) + "\n"  # appended after the fixture's own settings: the last one wins


async def _outage(
    tmp_path: Path, extra: str, influxd: Influx, db: str, root: str, registry: Registry, n: int, expect: int
) -> int:
    broker = start_mosquitto(tmp_path / "mosquitto", extra_config=extra)
    try:
        settings = make_settings(tmp_path, broker, influxd, db, root)
        async with running(settings, registry):
            pass  # ingest's persistent session now exists on the broker
        await asyncio.to_thread(publish, broker, reading_payloads(registry, root, n))
        await asyncio.to_thread(broker.stop)  # the broker restarts during the outage, too
        await asyncio.to_thread(broker.start)
        async with running(settings, registry):
            await await_until(lambda: count_points(influxd, db) >= expect, 30, f"{expect} points")
            # One sentinel per device, published now, reaches each partition's session after
            # everything the broker kept for it; once all are stored, the count is final.
            sentinels = reading_payloads(registry, root, len(list(registry.devices())), start=n)
            await asyncio.to_thread(publish, broker, sentinels)
            since = json.loads(sentinels[0][1])["ts"]
            await await_until(lambda: count_points(influxd, db, since=since) == len(sentinels), 30,
                              "every sentinel")
        return await asyncio.to_thread(count_points, influxd, db) - len(sentinels)
    finally:
        broker.stop()


async def test_shipped_broker_config_keeps_an_ingest_outage(
    tmp_path: Path, influxd: Influx, influx_db: str, topic_root: str, registry: Registry
) -> None:
    stored = await _outage(
        tmp_path, _shipped_limits(), influxd, influx_db, topic_root, registry, 20_000, 20_000
    )
    assert stored == 20_000


async def test_mosquitto_default_queue_limit_would_lose_readings(
    tmp_path: Path, influxd: Influx, influx_db: str, topic_root: str, registry: Registry
) -> None:
    # The control: Mosquitto's default of 1000 queued messages per offline session (one session
    # per partition, each keeping its first 1000 and dropping the rest of its share).
    stored = await _outage(
        tmp_path, "max_queued_messages 1000\n", influxd, influx_db, topic_root, registry, 3000, 1000
    )
    assert 1000 <= stored < 3000


async def test_resuming_a_big_session_with_a_short_mqtt_timeout_does_not_loop(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, registry: Registry
) -> None:
    # A resumed session's queue arrives before the SUBACK; waiting for the SUBACK under the
    # connect timeout once made ingest reconnect forever on a slow machine.
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root)
    async with running(settings, registry):
        pass
    await asyncio.to_thread(publish, mosquitto, reading_payloads(registry, topic_root, 30_000))
    hurried = settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"timeout_s": 0.2})})
    async with running(hurried, registry):
        await await_until(lambda: count_points(influxd, influx_db) >= 30_000, 60, "the queued readings")
    assert count_points(influxd, influx_db) == 30_000


@contextlib.contextmanager
def stalling_influx(tmp_path: Path, database: str) -> Iterator[Influx]:
    """An InfluxDB of the test's own, to pause (SIGSTOP: writes hang) and resume at will."""
    influx = start_influxd(tmp_path / "influxd")
    try:
        influx.query(f'CREATE DATABASE "{database}"')
        yield influx
    finally:
        influx.resume()
        influx.stop()


async def test_a_batch_cut_short_by_a_lost_connection_is_stored_when_redelivered(
    tmp_path: Path, fresh_mosquitto: Broker, topic_root: str, registry: Registry
) -> None:
    # A batch is admitted (deduplication, in memory) and then hangs in its InfluxDB write
    # when the broker goes away. Its messages were never acknowledged, so the broker
    # redelivers them to the next session: they must be stored, not dropped as duplicates
    # of themselves.
    n = 300
    with stalling_influx(tmp_path, "cut") as influx:
        settings = make_settings(
            tmp_path, fresh_mosquitto, influx, "cut", topic_root, write_retries=20, backoff_max_s=0.5
        )
        async with running(settings, registry) as service:
            m = service.metrics
            influx.pause()  # every write now hangs until its timeout, then retries
            await asyncio.to_thread(publish, fresh_mosquitto, reading_payloads(registry, topic_root, n))
            await await_until(lambda: m.readings_in._value.get() > 0, 15, "a batch taken")
            assert m.stored._value.get() == 0  # ... and stuck in its write, unacknowledged
            await asyncio.to_thread(fresh_mosquitto.stop)  # saves its queue; no PUBACK went out
            await asyncio.to_thread(fresh_mosquitto.start)
            await await_until(lambda: m.mqtt_sessions._value.get() >= 2, 30, "the second session")
            influx.resume()
            await await_until(lambda: count_points(influx, "cut") >= n, 60, f"{n} points")
            assert m.duplicates._value.get() == 0  # the redelivered copies were not taken as seen
        assert count_points(influx, "cut") == n


async def test_a_stall_longer_than_the_keepalive_keeps_the_session(
    tmp_path: Path, fresh_mosquitto: Broker, topic_root: str, registry: Registry
) -> None:
    # Storage hangs (InfluxDB paused) while messages keep coming: ingest stops reading the
    # socket once two batches wait, but must still show the broker it is alive, or paho drops
    # the connection after 1.5-2 keepalive periods without a byte and a reconnect loop follows.
    n = 1000
    with stalling_influx(tmp_path, "stall") as influx:
        settings = make_settings(
            tmp_path, fresh_mosquitto, influx, "stall", topic_root,
            batch_size=50, write_retries=20, backoff_max_s=0.5,
        )
        settings.mqtt.keepalive_s = 5
        async with running(settings, registry) as service:
            m = service.metrics
            influx.pause()
            await asyncio.to_thread(publish, fresh_mosquitto, reading_payloads(registry, topic_root, n))
            # For more than two keepalive periods with the reader paused, the session must stay up.
            deadline = asyncio.get_running_loop().time() + 2.6 * settings.mqtt.keepalive_s
            while asyncio.get_running_loop().time() < deadline:
                assert m.mqtt_sessions._value.get() == len(service.partitions), "a session was dropped"
                await asyncio.sleep(0.1)
            assert any(i._paused for i in service.intakes.values())  # the stall was real
            influx.resume()
            await await_until(lambda: count_points(influx, "stall") >= n, 60, f"{n} points")
            assert m.mqtt_sessions._value.get() == len(service.partitions)  # one each, never reconnected
        assert count_points(influx, "stall") == n
