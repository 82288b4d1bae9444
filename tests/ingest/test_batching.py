"""How a session receives, on a real Mosquitto: an alerts session (``idle_s``) sleeps until a
message comes, then gathers only briefly; receiving leaves no garbage cycles for the collector."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path

from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.receive import MqttIntake, ack_tokens
from ingest.validate import Incoming
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


async def test_acknowledging_by_token_acknowledges_exactly_those_messages(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str
) -> None:
    # The alerts sessions keep one int per judged message until the state save (not the
    # message): the tokens must acknowledge exactly those messages, so that what was not
    # acknowledged comes back after a reconnection and nothing else does.
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root)
    topic = f"{topic_root}/batching/tokens"
    name = f"{topic_root}-tokens"

    def session() -> MqttIntake:
        return MqttIntake(settings.mqtt, settings.ingest, client_id=name, max_pending=1000)

    first = session()
    try:
        await first.connect([(topic, SubscribeOptions(qos=1))])
        await asyncio.to_thread(publish, mosquitto, [(topic, b"%d" % i) for i in range(200)])
        got: list[Incoming] = []
        while len(got) < 200:
            got += await asyncio.wait_for(first.next_batch(0.05), 10)
        tokens = ack_tokens(got)
        assert [t & 0xFFFF for t in tokens] == [m.mid for m in got] and all(t >> 16 == 1 for t in tokens)
        first.ack_tokens([t for t, m in zip(tokens, got, strict=True) if int(m.payload) % 2 == 0])
        await asyncio.sleep(0.5)  # the PUBACKs go out on the loop's next turns, as in a running session
        await first.disconnect()  # the session stays on the broker with what was not acknowledged
    finally:
        first.close()
    again = session()
    try:
        await again.connect([(topic, SubscribeOptions(qos=1))])
        back: list[Incoming] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                while len(back) < 100:
                    back += await again.next_batch(0.05)
        again.ack(back)
        await again.disconnect()
    finally:
        again.close()
    numbers = sorted(int(m.payload) for m in back)
    assert [n for n in numbers if n % 2] == list(range(1, 200, 2))  # every unacknowledged one, once
    # An acknowledged one may come again only if its PUBACK was cut by the disconnection (MQTT
    # delivers at least once; one CI run saw the last 22 again): never most of them.
    assert len([n for n in numbers if n % 2 == 0]) <= 25, numbers
