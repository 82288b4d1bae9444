"""Benchmark: the alerts engine's throughput and the reading-to-webhook latency under load.

1. Engine throughput: normal readings for every device of the example registry (every rule
   pack active, every rule of each device evaluated), through the pure ``step()`` and through
   ``AlertService.handle`` (which also persists any transitions). Reports readings/s.
2. Notification latency: ``AlertService.run`` consumes an inbox fed at a steady background
   rate of normal readings (default 5,000/s) while, once a second, a cold-chain reading with
   ``power_ok = 0`` (a rule with no hold time) is put on the inbox; the time from that put to
   the local HTTP receiver's receipt of the signed SMS webhook is recorded. The alert is then
   cleared so the next one is fresh. Reports p50/p99 and the background rate achieved.

SQLite in a temporary directory, loopback receiver; bounded by ``--seconds``.
Run: ``.venv/bin/python bench/bench_alerts.py [--readings 200000] [--seconds 20] [--rate 5000]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.engine import EngineState, step  # noqa: E402
from alerts.service import AlertService, build_engine_config  # noqa: E402
from weijian.config import Settings  # noqa: E402
from weijian.contract import CATALOGUE, GatewayStatus, MetricValue, Reading  # noqa: E402
from weijian.registry import load_registry  # noqa: E402

NORMAL = {"free_chlorine": 0.5, "total_chlorine": 0.6, "turbidity": 0.3, "ph": 7.3, "conductivity": 400.0,
          "temperature": 5.0, "combined_chlorine": 0.2, "orp": 700.0, "urea": 1.0, "cyanuric_acid": 10.0,
          "humidity": 55.0, "door_open": 0.0, "weight": 3.0, "power_ok": 1.0}


def normal_readings(registry: Any, start: datetime, count: int) -> list[Reading]:
    devices = list(registry.devices())
    out = []
    for i in range(count):
        site, dev = devices[i % len(devices)]
        ts = start + timedelta(milliseconds=i)
        metrics = {m: MetricValue(value=NORMAL[m], unit=CATALOGUE[site.kind][m]) for m in dev.metrics}
        out.append(Reading(site_id=site.id, device_id=dev.id, gateway_id="gw", kind=site.kind, ts=ts,
                           seq=i, metrics=metrics))
    return out


def bench_engine(settings: Settings, registry: Any, n: int) -> tuple[float, int]:
    config, _ = build_engine_config(settings, registry)
    state = EngineState(config=config)
    now = datetime.now(UTC)
    readings = normal_readings(registry, now - timedelta(seconds=n / 1000 + 1), n)
    rules = sum(len(d.rules) for d in config.devices.values())
    t0 = time.perf_counter()
    for r in readings:
        step(state, r, now)
    return n / (time.perf_counter() - t0), rules


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.arrivals.setdefault(self.headers.get("Idempotency-Key", "").split(":")[0],
                                             time.perf_counter())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms"


async def bench_latency(settings: Settings, registry: Any, seconds: float, rate: int,
                        receiver: Receiver) -> tuple[list[float], float]:
    service = AlertService.from_settings(settings, registry)
    inbox: asyncio.Queue[Reading | GatewayStatus] = asyncio.Queue(maxsize=20_000)
    events: asyncio.Queue[Any] = asyncio.Queue()
    site = registry.sites["yc-cc-001"]
    latencies: list[float] = []
    sent = 0
    seq = 10**9

    def fridge(power: float) -> Reading:
        nonlocal seq
        seq += 1
        metrics = {"temperature": MetricValue(value=5.0, unit="degC"),
                   "door_open": MetricValue(value=0.0, unit="0/1"),
                   "power_ok": MetricValue(value=power, unit="0/1")}
        return Reading(site_id=site.id, device_id="fr-02", gateway_id="gw", kind=site.kind,
                       ts=datetime.now(UTC), seq=seq, metrics=metrics)

    async def drain_events() -> None:
        while True:
            await events.get()

    # Pre-built, so the load generator's own pydantic cost does not eat the consumer's core.
    n_devices = len(list(registry.devices()))
    wanted = int(rate * (seconds + 2) * n_devices / (n_devices - 1))
    pool = [r for r in normal_readings(registry, datetime.now(UTC) - timedelta(hours=1), wanted)
            if (r.site_id, r.device_id) != (site.id, "fr-02")]

    async def background() -> None:
        nonlocal sent
        batch = max(rate // 100, 1)  # 100 batches a second
        i = 0
        while i < len(pool):
            tick = time.perf_counter()
            for r in pool[i:i + batch]:
                await inbox.put(r)
            i += batch
            sent += batch
            await asyncio.sleep(max(0.0, 0.01 - (time.perf_counter() - tick)))

    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(service.run(inbox, events), name="alerts")
        drainer = tg.create_task(drain_events(), name="events-drain")
        load = tg.create_task(background(), name="background-load")
        t_start = time.perf_counter()
        await asyncio.sleep(1.0)
        while time.perf_counter() - t_start < seconds:
            put_at = time.perf_counter()
            await inbox.put(fridge(0.0))
            await inbox.join()
            alert = next((a for a in service.state.alerts.values() if a.device_id == "fr-02"), None)
            if alert is not None:
                deadline = time.perf_counter() + 5
                while alert.alert_id not in receiver.arrivals and time.perf_counter() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
                if alert.alert_id in receiver.arrivals:
                    latencies.append(receiver.arrivals[alert.alert_id] - put_at)
            await inbox.put(fridge(1.0))
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - t_start
        for t in (runner, drainer, load):
            t.cancel()
    service.close()
    return latencies, sent / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=5000)
    args = parser.parse_args()
    registry = load_registry(ROOT / "examples" / "registry.toml")
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            tasks={"url": f"sqlite:///{tmp}/alerts.sqlite"},
            sms={"url": receiver.url, "secret": "bench"},
            alerts={"tick_s": 1.0, "rate_per_recipient_per_h": 100_000, "repeat_interval_min": 600},
        )
        per_s, rules = bench_engine(settings, registry, args.readings)
        print(f"engine step(): {per_s:,.0f} readings/s ({args.readings:,} readings, "
              f"{rules} rules over {len(list(registry.devices()))} devices)")
        latencies, achieved = asyncio.run(
            bench_latency(settings, registry, args.seconds, args.rate, receiver))
    latencies.sort()
    if latencies:
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"reading -> webhook: n={len(latencies)} p50={p50 * 1000:.1f} ms p99={p99 * 1000:.1f} ms "
              f"max={latencies[-1] * 1000:.1f} ms; background {achieved:,.0f} readings/s")
    else:
        print("no notification arrived")
    receiver.server.shutdown()


if __name__ == "__main__":
    main()
