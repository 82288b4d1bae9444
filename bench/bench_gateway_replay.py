"""Benchmark: replay after an outage, 100,000 readings queued, to a local Mosquitto.

Fills a fresh spool with N readings (as a gateway does during a long broker outage), starts
a local Mosquitto, then runs the gateway's real publisher (QoS 1, in-flight window, delete
on PUBACK) until the spool is empty. Reports readings per second from the first publish to
the last deletion, and checks that every reading was acknowledged and removed.

Run: ``.venv/bin/python bench/bench_gateway_replay.py [--readings 100000] [--inflight 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.publish import Publisher
from gateway.spool import Sample, Spool
from weijian.config import MqttSettings
from weijian.contract import Kind, MetricValue
from weijian.demo.local_services import running_mosquitto
from weijian.logs import configure_logging


def fill(spool: Spool, n: int) -> None:
    ts = datetime(2026, 7, 15, tzinfo=UTC)
    batch = []
    for i in range(n):
        batch.append(Sample(
            f"site-{i % 100:03d}", "wq-01", Kind.DRINKING_WATER, ts,
            {
                "free_chlorine": MetricValue(value=0.42, unit="mg/L"),
                "turbidity": MetricValue(value=0.31, unit="NTU"),
                "ph": MetricValue(value=7.21, unit="pH"),
                "temperature": MetricValue(value=14.2, unit="degC"),
                "conductivity": MetricValue(value=412.5, unit="uS/cm"),
            },
        ))
        if len(batch) == 1000:
            spool.append(batch)
            batch = []
    spool.append(batch)


class Counter:
    """A QoS 1 subscriber counting distinct seqs (``--verify``), in paho's own thread."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.seqs: set[int] = set()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self.client.on_message = lambda c, u, m: (
            self.seqs.add(json.loads(m.payload)["seq"]) if m.topic.endswith("/reading") else None
        )
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("bench/v1/#", qos=1)
        self.client.loop_start()


async def replay(port: int, spool: Spool, inflight: int, timeout_s: float) -> float:
    mqtt = MqttSettings(host="127.0.0.1", port=port, topic_root="bench/v1")
    publisher = Publisher(mqtt, "gw-bench", spool, inflight)
    await publisher.start()
    await asyncio.wait_for(publisher.connected.wait(), 10)
    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        send = tg.create_task(publisher.send(), name="mqtt-send")
        acks = tg.create_task(publisher.collect_acks(), name="mqtt-acks")
        try:
            await asyncio.wait_for(publisher.drained(), timeout_s)
        finally:
            send.cancel()
            acks.cancel()
    elapsed = time.perf_counter() - started
    await publisher.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this long")
    parser.add_argument("--verify", action="store_true", help="also count deliveries with a subscriber")
    args = parser.parse_args()
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        spool = Spool(Path(tmp) / "spool.sqlite", gateway_id="gw-bench", topic_root="bench/v1",
                      max_rows=args.readings + 1, fsync="full")
        t0 = time.perf_counter()
        fill(spool, args.readings)
        print(f"queued {spool.stats().depth} readings in {time.perf_counter() - t0:.1f} s")
        with running_mosquitto(Path(tmp) / "mosquitto") as broker:
            counter = Counter(broker.port) if args.verify else None
            elapsed = asyncio.run(replay(broker.port, spool, args.inflight, args.timeout))
            if counter is not None:
                deadline = time.monotonic() + 30
                while len(counter.seqs) < args.readings and time.monotonic() < deadline:
                    time.sleep(0.1)
                counter.client.loop_stop()
                print(f"subscriber received {len(counter.seqs)} distinct seqs of {args.readings}")
        stats = spool.stats()
        assert stats.depth == 0, f"{stats.depth} readings left in the spool"
        rate = args.readings / elapsed
        print(f"replayed {args.readings} readings in {elapsed:.2f} s: {rate:,.0f} readings/s "
              f"(in flight <= {args.inflight}); spool empty: {stats.depth == 0}")
        spool.close()


if __name__ == "__main__":
    main()
