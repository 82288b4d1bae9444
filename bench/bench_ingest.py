"""Benchmark: readings per second through ingest, end to end from publish to stored.

Starts its own Mosquitto and InfluxDB 1.x on loopback (in a temporary folder), then for one
and for two ingest processes (``weijian ingest run``, one shared subscription):

* **live**: publishers send N readings at QoS 1 as fast as the broker takes them while ingest
  runs; the rate is N divided by the time from the first publish until InfluxDB counts N
  points (``SELECT count(...)``). The publishers are ``mosquitto_pub -l`` processes, one per
  device topic (``--publisher paho``: one Python process instead).
* **backlog**: ingest is stopped, N readings are published into its persistent session, then
  ingest starts; ``per_second`` is N divided by the time from starting the ingest processes
  (their start-up, about 1-3 s, included) to the last point counted.

``per_second_steady`` (both modes) leaves out the ramp-up: the points stored after the first
non-zero count, divided by the time from that count to the end.

With alerts, a run ends only when InfluxDB counts N points *and* every ingest process's
``ingest_alerts_lag`` is 0 (the alert engine has judged every reading as well); the live
rate is N over the time from the first publish to that moment.

Readings are realistic: every metric of each registry device with its unit and flag. CPU is
each ingest process's user + system time from ``/proc``; the broker's, InfluxDB's and (live)
the publishers' CPU over the same span are reported apart; peak RSS is ``VmHWM``. Alerts are
evaluated (``[ingest] alerts = true``, the rule packs of the alerts stage on a SQLite task
database) unless ``--no-alerts``.

Run: ``.venv/bin/python bench/bench_ingest.py [--readings 200000] [--no-alerts]``
(loopback only; each phase is bounded by ``--timeout`` seconds).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procstat import cpu_seconds, peak_rss_mb  # noqa: E402

from weijian.contract import CATALOGUE  # noqa: E402
from weijian.demo.local_services import Broker, Influx, free_port, start_influxd, start_mosquitto  # noqa: E402
from weijian.registry import load_registry  # noqa: E402

REGISTRY = ROOT / "examples" / "registry.toml"
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
KINDS = ("drinking_water", "swimming_pool", "medical_waste", "cold_chain")


# Normal operation: values inside every rule's band, with a little noise (rules evaluated, none firing).
NORMAL = {
    "drinking_water": {
        "free_chlorine": 0.5,
        "total_chlorine": 0.7,
        "turbidity": 0.3,
        "ph": 7.2,
        "conductivity": 400.0,
        "temperature": 15.0,
    },
    "swimming_pool": {
        "free_chlorine": 0.6,
        "combined_chlorine": 0.2,
        "ph": 7.4,
        "turbidity": 0.2,
        "orp": 700.0,
        "temperature": 27.0,
        "urea": 1.0,
        "cyanuric_acid": 20.0,
    },
    "medical_waste": {"temperature": 10.0, "humidity": 60.0, "door_open": 0.0, "weight": 100.0},
    "cold_chain": {"temperature": 5.0, "door_open": 0.0, "power_ok": 1.0, "humidity": 50.0},
}


def payloads(n: int, root: str) -> list[tuple[str, bytes]]:
    """``n`` valid readings spread over every registry device, each with all its metrics."""
    registry = load_registry(REGISTRY)
    devices = list(registry.devices())
    base = datetime.now(UTC) - timedelta(minutes=1) - timedelta(milliseconds=n)
    out = []
    for i in range(n):
        site, dev = devices[i % len(devices)]
        units = CATALOGUE[site.kind]
        normal = NORMAL[site.kind.value]
        noise = 1 + ((i * 7919) % 21 - 10) / 1000  # within +-1 %
        metrics = {
            m: {
                "value": round(normal[m] * (noise if normal[m] > 1.5 else 1), 3),
                "unit": units[m],
                "flag": "N",
            }
            for m in dev.metrics
        }
        ts = (base + timedelta(milliseconds=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = {
            "site_id": site.id,
            "device_id": dev.id,
            "gateway_id": registry.gateway_of(site.id, dev.id),
            "kind": site.kind.value,
            "ts": ts,
            "seq": i,
            "metrics": metrics,
        }
        out.append((f"{root}/{site.id}/{dev.id}/reading", json.dumps(body).encode()))
    return out


def publisher(port: int, n: int, root: str, ready: Any) -> None:
    """Child process: publish ``n`` readings at QoS 1, keeping at most 10,000 unacknowledged."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    messages = payloads(n, root)
    room = threading.Semaphore(10_000)  # paho's mids wrap at 65535
    done = threading.Event()
    acked = [0]

    def on_publish(*_: Any) -> None:
        acked[0] += 1
        room.release()
        if acked[0] == n:
            done.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.set()
    for topic, payload in messages:
        room.acquire()
        client.publish(topic, payload, qos=1)
    done.wait(600)
    client.disconnect()
    client.loop_stop()


class CPublishers:
    """``mosquitto_pub -l`` processes, one per device topic, fed the readings on stdin.

    A Python publisher on the same 2 cores tops out near 12,000-14,000 QoS 1 messages/s and
    takes CPU from ingest; these C clients (libmosquitto, up to 2,000 in flight each) cost
    a fraction of that, so a live run measures ingest, broker and InfluxDB rather than the
    load generator. They stand for the many gateways of a city, which run on other machines.
    """

    def __init__(self, port: int, n: int, root: str) -> None:
        by_topic: dict[str, list[bytes]] = {}
        for topic, payload in payloads(n, root):
            by_topic.setdefault(topic, []).append(payload)
        self.port = port
        self.blobs = {topic: b"\n".join(lines) + b"\n" for topic, lines in by_topic.items()}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        feeders = []
        for i, (topic, blob) in enumerate(self.blobs.items()):
            proc = subprocess.Popen(
                [
                    MOSQUITTO_PUB,
                    "-p",
                    str(self.port),
                    "-V",
                    "mqttv5",
                    "-q",
                    "1",
                    "-M",
                    "2000",
                    "-i",
                    f"bench-pub-{self.port}-{i}",
                    "-t",
                    topic,
                    "-l",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
            )
            self.procs.append(proc)
            feeders.append(threading.Thread(target=self._feed, args=(proc, blob), daemon=True))
        for feeder in feeders:
            feeder.start()

    @staticmethod
    def _feed(proc: subprocess.Popen[bytes], blob: bytes) -> None:
        assert proc.stdin is not None
        proc.stdin.write(blob)
        proc.stdin.close()

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                raise SystemExit("mosquitto_pub did not finish") from None
        if any(p.returncode for p in self.procs):
            raise SystemExit(f"mosquitto_pub failed: {[p.returncode for p in self.procs]}")


def count(influx: Influx, db: str) -> int:
    series = influx.query(f'SELECT count("temperature") FROM {",".join(KINDS)}', db)
    return sum(s["values"][0][1] for s in series)


class Ingest:
    """One ``weijian ingest run`` child process with its own files and metrics port."""

    def __init__(self, work: Path, name: str, broker: Broker, influx: Influx, db: str, alerts: bool) -> None:
        self.port = free_port()
        self.conf = work / f"{name}.toml"
        self.log = work / f"{name}.log"
        self.conf.write_text(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ntopic_root = "{db.replace("_", "-")}/v1"\n'
            f'[influx]\nurl = "{influx.url}"\ndatabase = "{db}"\n'
            f'[registry]\npath = "{REGISTRY}"\n'
            f'[tasks]\nurl = "sqlite:///{work / "tasks.sqlite"}"\n'
            f'[ingest]\nclient_id = "bench-{db}-{name}"\nalerts = {str(alerts).lower()}\n'
            f"metrics_port = {self.port}\n"
            f'spool_path = "{work / name}-spool.sqlite"\nquarantine_path = "{work / name}-q.sqlite"\n'
            f'dedup_path = "{work / name}-dedup.sqlite"\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "weijian.cli",
                "--log-level",
                "WARNING",
                "ingest",
                "run",
                "--config",
                str(self.conf),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"ingest exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("ingest did not become healthy")

    def metric(self, name: str) -> float:
        """One unlabelled sample from the process's ``/metrics``."""
        for line in httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def alerts_lag(self) -> int:
        """Readings and statuses accepted but not yet judged by the alert engine."""
        return int(self.metric("ingest_alerts_lag"))

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def run(
    mode: str,
    processes: int,
    n: int,
    broker: Broker,
    influx: Influx,
    work: Path,
    alerts: bool,
    timeout_s: float,
    publishers: str,
) -> dict[str, Any]:
    db = f"bench_{mode}_{processes}"
    influx.query(f'CREATE DATABASE "{db}"')
    ingests = [Ingest(work, f"{db}-{i}", broker, influx, db, alerts) for i in range(processes)]
    for ingest in ingests:
        ingest.start()
    times = os.times()
    children_cpu0 = times.children_user + times.children_system
    ready = multiprocessing.Event()
    restarted = 0.0
    root = f"{db.replace('_', '-')}/v1"
    pub: CPublishers | multiprocessing.Process
    if publishers == "mosquitto_pub":
        pub = CPublishers(broker.port, n, root)
    else:
        pub = multiprocessing.Process(target=publisher, args=(broker.port, n, root, ready))
    if mode == "backlog":
        for ingest in ingests:
            ingest.stop()  # the persistent sessions stay on the broker and queue what follows
        pub.start()
        pub.join(timeout_s)
        restarted = time.monotonic()  # the clock includes ingest's start-up (about 1 s)
        for ingest in ingests:
            ingest.start()
    elif isinstance(pub, CPublishers):
        pub.start()
    else:
        pub.start()
        ready.wait(120)
    assert all(i.proc for i in ingests)
    broker_cpu0, influx_cpu0 = cpu_seconds(broker.proc.pid), cpu_seconds(influx.proc.pid)
    # Backlog: the processes were just started, so count all their CPU, start-up included
    # (the first one drains while the second starts). Live: from the first publish.
    cpu0 = [0.0 if mode == "backlog" else cpu_seconds(i.proc.pid) for i in ingests]  # type: ignore[union-attr]
    started = time.monotonic()
    first = None
    stored = at_first = 0
    while time.monotonic() - started < timeout_s:
        stored = count(influx, db)
        if stored and first is None:
            first, at_first = time.monotonic(), stored
        if stored >= n:
            break
        time.sleep(0.1)
    stored_at = time.monotonic()
    # Stored is not enough: the run ends when the alert engine has also judged every reading.
    lags = [ingest.alerts_lag() for ingest in ingests]
    while alerts and any(lags) and time.monotonic() - started < timeout_s:
        time.sleep(0.05)
        lags = [ingest.alerts_lag() for ingest in ingests]
    ended = time.monotonic()
    overflowed = sum(ingest.metric("ingest_alerts_overflowed") for ingest in ingests) if alerts else 0
    cpu = sum(cpu_seconds(i.proc.pid) - c for i, c in zip(ingests, cpu0, strict=True))  # type: ignore[union-attr]
    rss = max(peak_rss_mb(i.proc.pid) for i in ingests)  # type: ignore[union-attr]
    others = {
        "broker": cpu_seconds(broker.proc.pid) - broker_cpu0,
        "influxd": cpu_seconds(influx.proc.pid) - influx_cpu0,
    }
    pub.join(60)  # done already in a live run: every reading was stored
    children = os.times()
    if mode == "live":  # the publishers' CPU (they are this process's only children to have exited)
        others["publishers"] = children.children_user + children.children_system - children_cpu0
    for ingest in ingests:
        ingest.stop()
    span = ended - (restarted if mode == "backlog" else started)
    return {
        "mode": mode,
        "processes": processes,
        "publisher": publishers,
        "readings": n,
        "stored": stored,
        "seconds": round(span, 2),
        "per_second": round(stored / span),
        # the steady state: points stored after the first count, over the time since then
        "per_second_steady": round((stored - at_first) / (ended - first)) if first and ended > first else 0,
        "alerts_lag_after_s": round(ended - stored_at, 2),  # judging the last readings after storing
        "alerts_lag_left": sum(lags),  # items not judged when the run ended (must be 0)
        "alerts_overflowed": overflowed,  # items that went through the durable backlog
        "cpu_s": round(cpu, 1),
        "cpu_ms_per_1000": round(cpu / max(stored, 1) * 1e6, 1),
        "peak_rss_mb": round(rss, 1),
        # CPU of the rest of the machine's load over the same span, in ms per 1,000 readings
        "other_cpu_ms_per_1000": {k: round(v / max(stored, 1) * 1e6, 1) for k, v in others.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--no-alerts", action="store_true", help="ingest without the alert engine")
    parser.add_argument("--timeout", type=float, default=180.0, help="bound of each phase, seconds")
    parser.add_argument("--modes", default="live,backlog")
    parser.add_argument(
        "--publisher",
        choices=("mosquitto_pub", "paho"),
        default="mosquitto_pub",
        help="load generator: C clients (package mosquitto-clients), or one paho process",
    )
    args = parser.parse_args()
    if args.publisher == "mosquitto_pub" and not Path(MOSQUITTO_PUB).exists():
        raise SystemExit(f"{MOSQUITTO_PUB} not found: apt install mosquitto-clients, or --publisher paho")
    alerts = not args.no_alerts
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        broker = start_mosquitto(work / "mosquitto", extra_config="max_inflight_messages 0\n")
        influx = start_influxd(work / "influxd")
        try:
            for mode in args.modes.split(","):
                for processes in (1, 2):
                    result = run(
                        mode,
                        processes,
                        args.readings,
                        broker,
                        influx,
                        work,
                        alerts,
                        args.timeout,
                        args.publisher,
                    )
                    result["alerts"] = alerts
                    print(json.dumps(result), flush=True)
        finally:
            broker.stop()
            influx.stop()


if __name__ == "__main__":
    main()
