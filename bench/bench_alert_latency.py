"""Benchmark: alert latency through the running programs, publish to signed webhook received.

Starts its own Mosquitto and InfluxDB on loopback, one ``weijian ingest run`` process with the
alert engine (SQLite tasks, or ``--tasks-url postgresql://...``), and a local SMS receiver.
A background publisher, a child process of its own, sends normal readings of the example
registry's other devices at ``--rate`` readings/s (QoS 1). Every ``--every`` seconds a probe
publishes a power-loss reading of one fridge (``yc-cc-001/fr-02``, rule ``cc-power-lost``,
which fires at once), then waits for its SMS at the receiver; the latency is from just before
the probe's ``publish()`` to the webhook request's arrival. Then the fridge gets power back
(the alert resolves, nothing is sent) and the next probe starts a new alert.

Run: ``.venv/bin/python bench/bench_alert_latency.py [--seconds 30] [--rate 5000]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_alerts import NORMAL, Receiver  # noqa: E402

from weijian.contract import CATALOGUE  # noqa: E402
from weijian.demo.local_services import free_port, start_influxd, start_mosquitto  # noqa: E402
from weijian.registry import load_registry  # noqa: E402

REGISTRY = ROOT / "examples" / "registry.toml"
PROBE = ("yc-cc-001", "fr-02")


def _background(registry: object, root: str, count: int) -> list[tuple[str, bytes]]:
    devices = [(s, d) for s, d in registry.devices() if (s.id, d.id) != PROBE]  # type: ignore[attr-defined]
    start = datetime.now(UTC) - timedelta(seconds=count / 1000 + 5)
    out = []
    for i in range(count):
        site, dev = devices[i % len(devices)]
        gateway = registry.gateway_of(site.id, dev.id)  # type: ignore[attr-defined]
        body = {"site_id": site.id, "device_id": dev.id, "gateway_id": gateway,
                "kind": site.kind.value, "ts": (start + timedelta(milliseconds=i)).isoformat(), "seq": i,
                "metrics": {m: {"value": NORMAL[m], "unit": CATALOGUE[site.kind][m], "flag": "N"}
                            for m in dev.metrics}}
        out.append((f"{root}/{site.id}/{dev.id}/reading", json.dumps(body).encode()))
    return out


def _publish_background(port: int, root: str, count: int, rate: int, stop: Any, sent: Any) -> None:
    """The other traffic, at ``rate`` readings/s, QoS 1 (runs in a child process)."""
    load = _background(load_registry(REGISTRY), root, count)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    began = time.monotonic()
    for i, (topic, payload) in enumerate(load):
        if stop.is_set():
            break
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.publish(topic, payload, qos=1)
        sent.value = i + 1
    client.disconnect()
    client.loop_stop()


def _probe(root: str, seq: int, power: float) -> tuple[str, bytes]:
    body = {"site_id": PROBE[0], "device_id": PROBE[1], "gateway_id": "gw-chengguan-public",
            "kind": "cold_chain", "ts": datetime.now(UTC).isoformat(), "seq": seq,
            "metrics": {"temperature": {"value": 5.0, "unit": "degC", "flag": "N"},
                        "door_open": {"value": 0.0, "unit": "0/1", "flag": "N"},
                        "power_ok": {"value": power, "unit": "0/1", "flag": "N"}}}
    return f"{root}/{PROBE[0]}/{PROBE[1]}/reading", json.dumps(body).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--tasks-url", default=None)
    args = parser.parse_args()
    receiver = Receiver()
    root = "bench/v1"
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        broker = start_mosquitto(tmp / "mosquitto")
        influx = start_influxd(tmp / "influxdb")
        influx.query('CREATE DATABASE "bench"')
        port = free_port()
        conf = tmp / "ingest.toml"
        conf.write_text(
            f'[mqtt]\nport = {broker.port}\ntopic_root = "{root}"\n'
            f'[influx]\nurl = "{influx.url}"\ndatabase = "bench"\n'
            f'[registry]\npath = "{REGISTRY}"\n'
            f'[tasks]\nurl = "{args.tasks_url or f"sqlite:///{tmp}/tasks.sqlite"}"\n'
            f'[sms]\nurl = "{receiver.url}"\nsecret = "bench"\n'
            "[alerts]\nrate_per_recipient_per_h = 100000\nrepeat_interval_min = 600\n"
            f'[ingest]\nmetrics_port = {port}\nclient_id = "bench-latency"\n'
            f'spool_path = "{tmp}/spool.sqlite"\nquarantine_path = "{tmp}/q.sqlite"\n'
            f'dedup_path = "{tmp}/d.sqlite"\n'
        )
        command = [sys.executable, "-m", "weijian.cli", "--log-level", "WARNING",
                   "ingest", "run", "--config", str(conf)]
        proc = subprocess.Popen(command, cwd=ROOT, stderr=(tmp / "ingest.log").open("wb"))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json().get("ready"):
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            # The background load comes from a process of its own: a publisher thread in this
            # process would take the GIL from the receiver and add its waits to the latencies.
            ctx = multiprocessing.get_context("spawn")
            stop = ctx.Event()
            sent = ctx.Value("q", 0)
            count = int(args.rate * (args.seconds + 5))
            loader = ctx.Process(target=_publish_background, daemon=True,
                                 args=(broker.port, root, count, args.rate, stop, sent))
            loader.start()
            probe = mqtt.Client(CallbackAPIVersion.VERSION2)
            probe.connect("127.0.0.1", broker.port)
            probe.loop_start()
            latencies: list[float] = []
            seq = 10**9
            time.sleep(1.0)
            began = time.monotonic()
            while time.monotonic() - began < args.seconds:
                known = set(receiver.arrivals)
                seq += 1
                t0 = time.perf_counter()
                probe.publish(*_probe(root, seq, 0.0), qos=1)
                wait_until = time.monotonic() + 5
                while time.monotonic() < wait_until and not set(receiver.arrivals) - known:
                    time.sleep(0.0005)
                new = set(receiver.arrivals) - known
                if new:
                    latencies.append(receiver.arrivals[new.pop()] - t0)
                seq += 1
                time.sleep(0.05)
                probe.publish(*_probe(root, seq, 1.0), qos=1)
                time.sleep(args.every)
            elapsed = time.monotonic() - began + 1.0
            stop.set()
            loader.join(10)
            if loader.is_alive():
                loader.kill()
            probe.loop_stop()
        finally:
            proc.terminate()
            proc.wait(30)
            broker.stop()
            influx.stop()
    latencies.sort()
    if not latencies:
        print("no notification arrived")
        return
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(json.dumps({"n": len(latencies), "p50_ms": round(p50 * 1000, 1), "p99_ms": round(p99 * 1000, 1),
                      "max_ms": round(latencies[-1] * 1000, 1),
                      "background_per_s": round(sent.value / elapsed)}))


if __name__ == "__main__":
    main()
