"""How a session receives, on a real Mosquitto: an alerts session (``idle_s``) sleeps until a
message comes, then gathers only briefly; receiving leaves no garbage cycles for the collector."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path

from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.receive import MqttIntake
from tests.ingest.conftest import make_settings, publish
from weijian.config import Settings
from weijian.demo.local_services import Broker, Influx


@contextlib.asynccontextmanager
async def intake(settings: Settings, topic: str, name: str, max_pending: int) -> AsyncIterator[MqttIntake]:
    session = MqttIntake(settings.mqtt, settings.ingest, client_id=name, persistent=False,
                         max_pending=max_pending)
    try:
        await session.connect([(topic, SubscribeOptions(qos=1))])
        yield session
        await session.disconnect()
    finally:
        session.close()


async def test_an_idle_session_sleeps_until_a_message_then_gathers_briefly(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str
) -> None:
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root, batch_size=5000)
    topic = f"{topic_root}/batching/idle"
    async with intake(settings, topic, f"{topic_root}-idle", max_pending=1000) as session:
        # Nothing arrives: an empty batch once idle_s has passed.
        assert await asyncio.wait_for(session.next_batch(0.005, idle_s=0.2), 10) == []
        # A message 0.3 s into a 60 s idle wait ends it; the batch is then cut 5 ms later,
        # not after the 60 s.
        waiting = asyncio.create_task(session.next_batch(0.005, idle_s=60.0))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await asyncio.to_thread(publish, mosquitto, [(topic, b"alarm")])
        batch = await asyncio.wait_for(waiting, 10)
        session.ack(batch)
    assert [m.payload for m in batch] == [b"alarm"]


async def test_receiving_leaves_no_reference_cycles_for_the_collector(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str
) -> None:
    # paho's topic matcher left a cycle per message (a recursive closure): tens of thousands of
    # dead objects a second, and young-generation collections of 30-85 ms that stalled the loop.
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root, batch_size=5000,
                             fast_path=False)  # paho's own reader: every message through its handler
    topic = f"{topic_root}/batching/gc"
    n = 2000
    async with intake(settings, topic, f"{topic_root}-gc", max_pending=5000) as session:
        gc.collect()
        gc.disable()
        try:
            await asyncio.to_thread(publish, mosquitto, [(topic, b"%d" % i) for i in range(n)])
            got: list[bytes] = []
            while len(got) < n:
                batch = await asyncio.wait_for(session.next_batch(0.05), 10)
                session.ack(batch)
                got += [m.payload for m in batch]
            found = gc.collect()
        finally:
            gc.enable()
    assert len(got) == n
    assert found < n // 10, f"{found} objects in reference cycles for {n} messages"
