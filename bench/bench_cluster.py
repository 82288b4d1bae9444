"""Benchmark: a partitioned ingest cluster (1, 2 or 3 processes) draining a backlog, alerts on.

Starts its own Mosquitto and InfluxDB 1.x on loopback (in a temporary folder) and uses the
local PostgreSQL (``--pg``, a fresh schema per run, dropped afterwards) as ``[tasks] url``, so
the processes coordinate through advisory locks and the alert engine keeps its state there.
For each registry size (cold-chain sites, one fridge logger each: temperature, door, mains)
and each process count, one run:

1. **warm-up**: start the processes (same ``client_id``, ``partitions`` = 8), wait until every
   ``/healthz`` says ``ready`` and the partitions are split between them, then SIGTERM them.
   Every partition's two persistent sessions (``{client_id}-p{n}`` and ``-p{n}-alerts``) now
   exist on the broker.
2. **backlog**: publish ``--readings`` readings at QoS 1 (one paho client, at most 10,000 in
   flight) while ingest is down: every device in turn, one reading a minute, time order,
   per-gateway increasing ``seq``, the last minute just before now, values inside every band.
3. **drain**: start the processes again; the clock runs from their start (Python start-up,
   claim rounds and re-balancing included) until InfluxDB counts every point **and** every
   process reports ``alerts_lag`` 0 **and** the processes' ``ingest_alerts_judged_total`` sum
   to at least the readings published.

Reported: readings/s (readings over that time), *steady* (points stored after the first
non-zero count over the time since that count), ingest CPU (user + system from ``/proc``,
all processes, start-up included; in brackets from the first point to the last, without the
start-up) per 1,000 readings, each process's peak RSS (``VmHWM``),
the broker's CPU over the drain, the partitions each process held at the end, and whether
anything was logged at ERROR. JSON lines, then a markdown table.

Run: ``.venv/bin/python bench/bench_cluster.py [--readings 100000] [--devices 1000,10000]
[--processes 1,2,3] [--timeout 600]`` (loopback only; each phase is bounded by ``--timeout``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procstat import cpu_seconds, peak_rss_mb  # noqa: E402

from tests.ingest.cluster import fridge_registry  # noqa: E402
from weijian.contract import CATALOGUE, Kind  # noqa: E402
from weijian.demo.local_services import Broker, Influx, free_port, start_influxd, start_mosquitto  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
METRICS = ("temperature", "door_open", "power_ok")
SHAPES = {1000: (100, 10), 10000: (500, 20)}  # devices -> (gateways, sites per gateway)


def write_registry(path: Path, gateways: int, per_gateway: int) -> list[tuple[str, str, str]]:
    """Cold-chain sites, one fridge logger each (the tests' generator, with every metric)."""
    return fridge_registry(path, gateways, per_gateway, METRICS)


def readings(root: str, devices: list[tuple[str, str, str]], n: int) -> list[tuple[str, bytes]]:
    """``n`` readings: every device once a minute, in time order; the last minute ends ~1 min ago."""
    units = CATALOGUE[Kind.COLD_CHAIN]
    rounds = -(-n // len(devices))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=rounds + 1)
    seqs: dict[str, int] = {}
    out = []
    for i in range(n):
        r, d = divmod(i, len(devices))
        site, device, gateway = devices[d]
        seq = seqs.get(gateway, 0)
        seqs[gateway] = seq + 1
        ts = start + timedelta(minutes=r, milliseconds=d * 60_000 // len(devices))
        noise = ((i * 7919) % 21 - 10) / 20  # 4.5-5.5 degC, inside 2-8
        body = {
            "site_id": site,
            "device_id": device,
            "gateway_id": gateway,
            "kind": "cold_chain",
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "seq": seq,
            "metrics": {
                "temperature": {"value": round(5.0 + noise, 2), "unit": units["temperature"], "flag": "N"},
                "door_open": {"value": 0.0, "unit": units["door_open"], "flag": "N"},
                "power_ok": {"value": 1.0, "unit": units["power_ok"], "flag": "N"},
            },
        }
        out.append((f"{root}/{site}/{device}/reading", json.dumps(body).encode()))
    return out


def publish(port: int, messages: list[tuple[str, bytes]], timeout_s: float) -> float:
    """Publish at QoS 1, at most 10,000 unacknowledged; returns the seconds it took."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    room = threading.Semaphore(2_000)  # paho's own in-flight window stays at its default
    done = threading.Event()
    acked = [0]

    def on_publish(*_: Any) -> None:
        acked[0] += 1
        room.release()
        if acked[0] == len(messages):
            done.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        protocol=MQTTProtocolVersion.MQTTv5,
        client_id=f"bench-cluster-pub-{uuid.uuid4().hex[:8]}",
    )
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    began = time.monotonic()
    for topic, payload in messages:
        room.acquire()
        client.publish(topic, payload, qos=1)
    if not done.wait(timeout_s):
        raise SystemExit(f"publisher: {acked[0]} of {len(messages)} acknowledged")
    took = time.monotonic() - began
    client.disconnect()
    client.loop_stop()
    return took


def count(influx: Influx, db: str) -> int:
    series = influx.query('SELECT count("temperature") FROM cold_chain', db)
    return sum(s["values"][0][1] for s in series)


class Ingest:
    """One ``weijian ingest run`` child process of the deployment, with its own files."""

    def __init__(self, work: Path, name: str, *, broker: Broker, influx: Influx, db: str, root: str,
                 registry: Path, tasks_url: str, client_id: str, extra: str) -> None:
        self.name = name
        self.port = free_port()
        self.conf = work / f"{name}.toml"
        self.log = work / f"{name}.log"
        self.conf.write_text(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\ntopic_root = "{root}"\n'
            f'[influx]\nurl = "{influx.url}"\ndatabase = "{db}"\n'
            f'[registry]\npath = "{registry}"\n'
            f'[tasks]\nurl = "{tasks_url}"\n'
            f'[ingest]\nclient_id = "{client_id}"\nalerts = true\nmetrics_port = {self.port}\n'
            f'spool_path = "{work / name}-spool.sqlite"\nquarantine_path = "{work / name}-q.sqlite"\n'
            f'dedup_path = "{work / name}-dedup.sqlite"\n' + extra,
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "weijian.cli", "--log-level", "WARNING", "ingest", "run",
             "--config", str(self.conf)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"),
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self) -> dict[str, Any]:
        if not self.alive():
            raise SystemExit(f"{self.name} exited ({self.proc and self.proc.returncode}): "
                             f"{self.log.read_text(errors='replace')[-3000:]}")
        try:
            got: dict[str, Any] = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return {}
        return got

    def metrics(self) -> dict[str, float]:
        """The unlabelled samples of ``/metrics`` (empty while the server is not up)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                key, _, value = line.partition(" ")
                with contextlib.suppress(ValueError, IndexError):
                    out[key] = float(value.split()[0])
        return out

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return -9
        return self.proc.returncode

    def errors(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line[:4000] for line in text.splitlines() if "ERROR" in line or "Traceback" in line
                or '"level": "error"' in line.lower()]


def warm_up(ingests: list[Ingest], partitions: set[int], timeout_s: float) -> dict[str, Any]:
    """Start, wait until all are ready and hold disjoint shares covering every partition, stop."""
    began = time.monotonic()
    for ingest in ingests:
        ingest.start()
    held: list[list[int]] = []
    split = False
    while time.monotonic() - began < timeout_s:
        healths = [i.health() for i in ingests]
        held = [list(h.get("partitions", [])) for h in healths]
        flat = [p for h in held for p in h]
        split = (
            all(h.get("ready") for h in healths)
            and len(flat) == len(set(flat))
            and set(flat) == partitions
            and all(held)
        )
        if split:
            break
        time.sleep(0.2)
    took = time.monotonic() - began
    codes = [i.stop() for i in ingests]
    if not split:
        raise SystemExit(f"warm-up: not ready/split after {took:.0f} s: {held}")
    return {"warmup_s": round(took, 1), "warmup_partitions": held, "warmup_exit": codes}


def _spy(ingest: Ingest, out: Path, tag: str) -> subprocess.Popen[bytes]:
    """Sample the process with py-spy (``pip install py-spy``) into ``out``, as collapsed stacks.

    With ``BENCH_SPY_IDLE=1`` idle samples are kept too, per thread: how much of the drain the
    event loop spends waiting rather than working.
    """
    idle = bool(os.environ.get("BENCH_SPY_IDLE"))
    assert ingest.proc is not None
    target = out / f"{tag}-{ingest.name}.txt"
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(ingest.proc.pid), "--rate", "200", "--format", "raw",
         "--output", str(target), "--nonblocking", *(["--idle", "--threads"] if idle else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def run(devices_n: int, processes: int, n: int, broker: Broker, influx: Influx, work: Path,
        timeout_s: float, extra: str, settle_s: float, profile: Path | None = None) -> dict[str, Any]:
    gateways, per_gateway = SHAPES.get(devices_n, (max(1, devices_n // 20), 20))
    tag = f"{devices_n}d{processes}p"
    run_dir = work / tag
    run_dir.mkdir()
    registry = run_dir / "registry.toml"
    devices = write_registry(registry, gateways, per_gateway)
    db = f"cluster_{tag}"
    root = f"cluster-{tag}/v1"
    influx.query(f'CREATE DATABASE "{db}"')
    schema = f"bench_cluster_{tag}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')  # type: ignore[arg-type]
    tasks_url = f"{PG}?options=-csearch_path%3D{schema}"
    from ingest.partitions import partition_registry
    from weijian.registry import load_registry

    nonempty = {p.index for p in partition_registry(load_registry(registry), 8) if p.sites}
    ingests = [
        Ingest(run_dir, f"ingest-{k}", broker=broker, influx=influx, db=db, root=root, registry=registry,
               tasks_url=tasks_url, client_id=f"bench-cluster-{tag}", extra=extra)
        for k in range(processes)
    ]
    result: dict[str, Any] = {"devices": len(devices), "gateways": gateways, "processes": processes,
                              "readings": n}
    try:
        result |= warm_up(ingests, nonempty, timeout_s)
        messages = readings(root, devices, n)
        result["publish_s"] = round(publish(broker.port, messages, timeout_s), 1)
        del messages
        time.sleep(1.5)  # autosave_interval 1: the broker has the backlog on disk too
        broker_cpu0 = cpu_seconds(broker.proc.pid)
        influx_cpu0 = cpu_seconds(influx.proc.pid)
        started = time.monotonic()
        for ingest in ingests:
            ingest.start()
        spies = [_spy(ingest, profile, tag) for ingest in ingests] if profile else []
        first = None
        stored = at_first = 0
        cpu_first = cpu_stored = 0.0
        judged = 0.0
        lags: list[float] = []
        last_judged = -1.0
        done = False
        stored_at = None
        samples = []
        settled_at = None  # stored and lag 0 but judged short: give the judges --settle seconds
        while time.monotonic() - started < timeout_s:
            stored = count(influx, db)
            now = time.monotonic()
            if stored and first is None:
                first, at_first = now, stored
                cpu_first = sum(cpu_seconds(i.proc.pid) for i in ingests if i.proc)
            if stored >= n and stored_at is None:
                stored_at = now
                cpu_stored = sum(cpu_seconds(i.proc.pid) for i in ingests if i.proc)
            ms = [i.metrics() for i in ingests]
            lags = [m.get("ingest_alerts_lag", -1) for m in ms]
            judged = sum(m.get("ingest_alerts_judged_total", 0) for m in ms)
            samples.append((round(now - started, 1), stored, int(judged)))
            if stored >= n and judged >= n and all(lag == 0 for lag in lags) and all(ms):
                done = True
                break
            if stored >= n and all(lag == 0 for lag in lags) and all(ms):
                if settled_at is None or judged != last_judged:
                    settled_at, last_judged = now, judged
                elif now - settled_at >= settle_s:
                    break  # nothing moves any more: judged_total stays short of the readings
            else:
                settled_at = None
            for ingest in ingests:
                ingest.health()  # raises if a process died
            time.sleep(0.2)
        ended = time.monotonic()
        span = ended - started
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
            spy.wait(60)
        cpu = sum(cpu_seconds(i.proc.pid) for i in ingests if i.proc)
        rss = [round(peak_rss_mb(i.proc.pid), 1) for i in ingests if i.proc]
        healths = [i.health() for i in ingests]
        ms = [i.metrics() for i in ingests]
        broker_cpu = cpu_seconds(broker.proc.pid) - broker_cpu0
        influx_cpu = cpu_seconds(influx.proc.pid) - influx_cpu0
        result |= {
            "done": done,  # False: timed out, or judged_total stayed short of the readings
            "end_s": round((settled_at or ended) - started, 2),  # when the last thing moved
            "stored": stored,
            "judged": int(judged),
            "stored_per_process": [int(m.get("ingest_points_stored_total", 0)) for m in ms],
            "judged_per_process": [int(m.get("ingest_alerts_judged_total", 0)) for m in ms],
            "alerts_lag_left": lags,
            "seconds": round(span, 2),
            "per_second": round(min(stored, n) / span) if done else None,
            # if judged_total stays short but everything is stored and lag is 0: up to then
            "per_second_stored_lag0": round(min(stored, n) / ((settled_at or ended) - started)),
            # points stored after the first non-zero count, over the time from it to the last point
            # (coarse: /metrics answers slowly while a process is busy, so counts are ~0.5-2 s apart)
            "per_second_steady": (
                round((min(stored, n) - at_first) / ((stored_at or ended) - first))
                if first and (stored_at or ended) > first else 0
            ),
            "stored_at_s": round(stored_at - started, 2) if stored_at else None,
            "samples": samples if len(samples) <= 200 else samples[:: len(samples) // 200 + 1],
            "first_point_after_s": round(first - started, 2) if first else None,
            "judging_after_stored_s": round(ended - stored_at, 2) if stored_at else None,
            "cpu_s": round(cpu, 1),
            "cpu_ms_per_1000": round(cpu / max(stored, 1) * 1e6, 1),
            # the same from the first point to the last one stored: start-up (imports, registry,
            # rule packs, state loads), which grows with the registry, left out
            "cpu_ms_per_1000_steady": (
                round((cpu_stored - cpu_first) / max(n - at_first, 1) * 1e6, 1)
                if first is not None and stored_at is not None else None
            ),
            "peak_rss_mb": rss,
            "broker_cpu_ms_per_1000": round(broker_cpu / max(stored, 1) * 1e6, 1),
            "influxd_cpu_ms_per_1000": round(influx_cpu / max(stored, 1) * 1e6, 1),
            "partitions_end": [h.get("partitions") for h in healths],
        }
    finally:
        result["exit_codes"] = [i.stop() for i in ingests]
        result["errors_logged"] = {i.name: i.errors()[:5] for i in ingests if i.errors()}
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]
        influx.query(f'DROP DATABASE "{db}"')
    return result


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| devices | processes | readings/s | steady | ingest CPU / 1,000 (steady) | peak RSS per process | "
        "broker / InfluxDB CPU / 1,000 | partitions at the end | done |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if "seconds" not in r:
            failed = r.get("error", "?")
            rows.append(f"| {r['devices']} | {r['processes']} | failed: {failed} | | | | | | no |")
            continue
        rate = (f"**{r['per_second']:,}**" if r["per_second"]
                else f"({r['per_second_stored_lag0']:,}; judged {r['judged']:,} of {r['readings']:,})")
        rows.append(
            f"| {r['devices']:,} | {r['processes']} | {rate} | {r['per_second_steady']:,} | "
            f"{r['cpu_ms_per_1000']} ms ({r['cpu_ms_per_1000_steady']} ms) | "
            f"{' / '.join(f'{x:.0f}' for x in r['peak_rss_mb'])} MB | "
            f"{r['broker_cpu_ms_per_1000']} / {r['influxd_cpu_ms_per_1000']} ms | "
            f"{' '.join(str(p) for p in r['partitions_end'])} | {'yes' if r['done'] else 'no'} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--devices", default="1000,10000")
    parser.add_argument("--processes", default="1,2,3")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of each phase, seconds")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="end a run whose judged_total stays short this long with all stored, lag 0")
    parser.add_argument("--ingest-extra", default="",
                        help="extra [ingest] TOML lines, e.g. 'claim_interval_s = 0.5'")
    parser.add_argument("--profile", type=Path, default=None,
                        help="sample each process's drain with py-spy into this folder (collapsed stacks)")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    extra = args.ingest_extra.replace("\\n", "\n")
    if extra and not extra.endswith("\n"):
        extra += "\n"
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        broker = start_mosquitto(work / "mosquitto", extra_config="max_inflight_messages 0\n")
        influx = start_influxd(work / "influxd")
        try:
            for devices in (int(d) for d in args.devices.split(",")):
                for processes in (int(p) for p in args.processes.split(",")):
                    print(f"# {datetime.now(UTC):%H:%M:%S} {devices} devices, {processes} processes, "
                          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
                    try:
                        result = run(devices, processes, args.readings, broker, influx, work,
                                     args.timeout, extra, args.settle, args.profile)
                    except SystemExit as exc:
                        result = {"devices": devices, "processes": processes, "readings": args.readings,
                                  "error": str(exc)[:3000]}
                    results.append(result)
                    print(json.dumps(result, ensure_ascii=False), flush=True)
        finally:
            broker.stop()
            influx.stop()
    print(table(results))


if __name__ == "__main__":
    main()
