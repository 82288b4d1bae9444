"""Issue 5 acceptance: real Mosquitto and InfluxDB, faults injected into the real processes."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ingest.validate import Quarantined
from tests.ingest.conftest import (
    await_until,
    count_points,
    make_settings,
    publish,
    reading_payloads,
    running,
    wait_until,
)
from weijian.contract import Rejection
from weijian.demo.local_services import Broker, Influx, free_port, running_influxd
from weijian.registry import Registry

REPO = Path(__file__).resolve().parents[2]


async def test_100k_readings_stored_exactly_once(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, registry: Registry
) -> None:
    total = 100_000
    messages = reading_payloads(registry, topic_root, total)
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root)
    async with running(settings, registry) as service:
        await asyncio.to_thread(publish, mosquitto, messages)
        await asyncio.to_thread(publish, mosquitto, messages[:2000])  # exact repeats
        await await_until(lambda: service.metrics.duplicates._value.get() >= 2000, 90, "duplicates")
        assert await asyncio.to_thread(count_points, influxd, influx_db) == total
        metrics = (
            await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{service.http_port}/metrics", timeout=5)
        ).text
        health = (
            await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{service.http_port}/healthz", timeout=5)
        ).json()
    assert "ingest_points_stored_total 100000.0" in metrics
    assert "ingest_duplicates_total 2000.0" in metrics
    assert health["ok"] and health["influx_healthy"]
    assert service.quarantine.counts() == {}


async def test_influxdb_outage_loses_nothing(
    tmp_path: Path, mosquitto: Broker, topic_root: str, registry: Registry
) -> None:
    total = 12_000
    messages = reading_payloads(registry, topic_root, total)
    with running_influxd(tmp_path / "influx") as influx:
        influx.query('CREATE DATABASE "outage"')
        settings = make_settings(tmp_path, mosquitto, influx, "outage", topic_root, write_retries=1)
        async with running(settings, registry) as service:
            await asyncio.to_thread(publish, mosquitto, messages[:4000])
            await await_until(lambda: count_points(influx, "outage") == 4000, 30, "first part")
            await asyncio.to_thread(influx.stop)
            await asyncio.to_thread(publish, mosquitto, messages[4000:8000])
            await await_until(lambda: service.spool.points == 4000, 30, "the spool to hold the outage")
            assert not service.storage.is_healthy
            await asyncio.to_thread(influx.start)
            await asyncio.to_thread(publish, mosquitto, messages[8000:])
            await await_until(lambda: count_points(influx, "outage") == total, 60, "every point")
            assert service.spool.points == 0


def _config(
    tmp_path: Path, name: str, broker: Broker, influx: Influx, db: str, root: str, **ingest: Any
) -> Path:
    conf = tmp_path / f"{name}.toml"
    ingest.setdefault("client_id", f"{name}-{root.split('/')[0]}")
    tasks = ingest.pop("tasks_url", None)
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in ingest.items())
    conf.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ntopic_root = "{root}"\n'
        f'[influx]\nurl = "{influx.url}"\ndatabase = "{db}"\ntimeout_s = 2.0\n'
        f'[registry]\npath = "{REPO / "examples" / "registry.toml"}"\n'
        + (f'[tasks]\nurl = "{tasks}"\n' if tasks else "")
        + '[ingest]\nalerts = false\nbatch_interval_s = 0.05\n'
        f'spool_path = "{tmp_path / name}-spool.sqlite"\nquarantine_path = "{tmp_path / name}-q.sqlite"\n'
        f'dedup_path = "{tmp_path / name}-dedup.sqlite"\n' + extra
    )
    return conf


def _healthy(port: int, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, f"ingest exited with {proc.returncode}"
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _spawn(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weijian.cli",
            "--log-level",
            "WARNING",
            "ingest",
            "run",
            "--config",
            str(conf),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def test_sigkill_mid_stream_then_restart_loses_and_doubles_nothing(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str
) -> None:
    registry_total = 40_000
    from weijian.registry import load_registry

    messages = reading_payloads(
        load_registry(REPO / "examples" / "registry.toml"), topic_root, registry_total
    )
    port = free_port()
    conf = _config(tmp_path, "ingest", mosquitto, influxd, influx_db, topic_root, metrics_port=port)
    log = tmp_path / "ingest.log"
    proc = _spawn(conf, log)
    try:
        wait_until(lambda: _healthy(port, proc), 20, "ingest to connect")
        publisher = threading.Thread(target=publish, args=(mosquitto, messages))
        publisher.start()
        wait_until(lambda: count_points(influxd, influx_db) >= 5000, 60, "a first part stored")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = count_points(influxd, influx_db)
        publisher.join(120)  # the rest waits in the persistent session
        assert killed_at < registry_total, "the kill must land mid-stream"
        proc = _spawn(conf, log)
        wait_until(lambda: count_points(influxd, influx_db) >= registry_total, 90, "every reading")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert count_points(influxd, influx_db) == registry_total
    # Each reading's temperature is stored once per point: a doubled point would need a second ts.
    series = influxd.query("SELECT count(*) FROM cold_chain GROUP BY device_id, site_id", influx_db)
    assert sum(s["values"][0][1] for s in series) == sum(1 for topic, _ in messages if "-cc-" in topic)


def _hostile_by_hypothesis(root: str, registry: Registry, limit: int) -> list[tuple[str, bytes]]:
    from ingest.validate import classify as judge
    from tests.ingest.test_core import NASTY, NOW, _payload

    topics = [
        f"{root}/yc-water-001/wq-01/reading",
        f"{root}/yc-water-001/ghost/reading",
        f"{root}/YC/wq-01/reading",
        f"{root}/gateways/gw-xinhe/status",
    ]
    collected: list[tuple[str, bytes]] = []

    @settings(
        max_examples=limit,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.sampled_from(topics),
        st.one_of(
            st.binary(max_size=200),
            st.builds(
                lambda a, b, c: a[:b] + c + a[b:],
                st.just(_payload()),
                st.integers(0, 200),
                st.sampled_from(NASTY),
            ),
            st.recursive(
                st.none() | st.floats() | st.text(max_size=8),
                lambda k: st.lists(k, max_size=3) | st.dictionaries(st.text(max_size=6), k, max_size=3),
                max_leaves=10,
            ).map(lambda v: json.dumps(v).encode()),
        ),
    )
    def collect(topic: str, payload: bytes) -> None:
        collected.append((topic, payload))

    collect()
    # Hypothesis may stumble on a valid message; keep only what the contract refuses.
    return [
        (t, p)
        for t, p in collected
        if isinstance(
            judge(t.replace(root, "weijian/v1"), p, root="weijian/v1", now=NOW, registry=registry),
            Rejection | Quarantined,
        )
    ]


def _hand_made(root: str, n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    good = f"{root}/yc-water-001/wq-01/reading"
    base = {
        "site_id": "yc-water-001",
        "device_id": "wq-01",
        "gateway_id": "gw-chengguan-water",
        "kind": "drinking_water",
        "ts": "2026-11-22T07:00:00Z",
        "seq": 1,
        "metrics": {"ph": {"value": 7.1, "unit": "pH", "flag": "N"}},
    }

    def body(**kw: Any) -> bytes:
        return json.dumps({**base, **kw}).encode()

    makers = [
        lambda: (good, b"x" * (1024 * 1024)),
        lambda: (good, b"[" * 20000 + b"]" * 20000),
        lambda: (good, body().replace(b"pH", b"p\xff\xfeH")),
        lambda: (good, body().replace(b"7.1", b"NaN")),
        lambda: (good, body(seq=str(rng.randint(0, 9)))),
        lambda: (good, body(metrics={"ph": {"value": "7.1", "unit": "pH", "flag": "N"}})),
        lambda: (good, body(metrics={"urea": {"value": 1.0, "unit": "mg/L", "flag": "N"}})),
        lambda: (good, body(metrics={"ph": {"value": 1.0, "unit": "mV", "flag": "N"}})),
        lambda: (good, body(site_id="xh-water-001")),
        lambda: (good, body(ts="2099-01-01T00:00:00Z")),
        lambda: (f"{root}/yc-water-001/ghost/reading", body(device_id="ghost")),
        lambda: (good, body()[: rng.randint(1, 150)]),
        lambda: (good, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))),
    ]
    out = [makers[0](), makers[1]()]  # two 1 MB-class payloads are enough for the broker
    while len(out) < n:
        out.append(rng.choice(makers[2:])())
    return out


async def test_hostile_traffic_is_quarantined_and_good_traffic_stored(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, registry: Registry
) -> None:
    rng = random.Random(5)
    from_hypothesis = _hostile_by_hypothesis(topic_root, registry, 3000)
    hostile = from_hypothesis + _hand_made(topic_root, 10_000 - len(from_hypothesis), rng)
    assert len(hostile) == 10_000 and len(from_hypothesis) > 2000
    good = reading_payloads(registry, topic_root, 5000)
    mixed = hostile + good
    rng.shuffle(mixed)
    settings = make_settings(tmp_path, mosquitto, influxd, influx_db, topic_root)
    async with running(settings, registry) as service:
        await asyncio.to_thread(publish, mosquitto, mixed)
        await await_until(lambda: sum(service.quarantine.counts().values()) >= 10_000, 60, "quarantine")
        await await_until(lambda: count_points(influxd, influx_db) >= 5000, 30, "good readings")
        counts = service.quarantine.counts()
        health = await asyncio.to_thread(
            httpx.get, f"http://127.0.0.1:{service.http_port}/healthz", timeout=5
        )
    assert sum(counts.values()) == 10_000
    assert count_points(influxd, influx_db) == 5000
    assert health.status_code == 200
    for reason in (
        "too_large",
        "malformed_json",
        "invalid_utf8",
        "non_finite",
        "wrong_type",
        "unknown_metric",
        "wrong_unit",
        "topic_mismatch",
        "future_timestamp",
        "unknown_device",
        "bad_identifier",
    ):
        assert counts.get(reason, 0) > 0, reason
    row = service.quarantine.list(reason="too_large", limit=1)[0]
    assert len(row.payload) >= 64 * 1024 and row.topic.endswith("/reading") and row.received_at


def _partitions(port: int) -> list[int]:
    try:
        held: list[int] = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["partitions"]
    except httpx.HTTPError:
        return []
    return held


def test_two_processes_split_the_partitions_and_store_each_reading_once(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str, postgres_url: str
) -> None:
    from ingest.partitions import partition_registry
    from weijian.registry import load_registry

    registry = load_registry(REPO / "examples" / "registry.toml")
    total = 30_000
    messages = reading_payloads(registry, topic_root, total)
    nonempty = {p.index for p in partition_registry(registry, 8) if p.sites}
    ports = [free_port(), free_port()]
    procs = []
    deployment = f"ingest-{topic_root.split('/')[0]}"  # one deployment: the same client id prefix
    try:
        for name, port in zip(("a", "b"), ports, strict=True):
            conf = _config(tmp_path, name, mosquitto, influxd, influx_db, topic_root, metrics_port=port,
                           client_id=deployment, tasks_url=postgres_url, claim_interval_s=0.5)
            log = tmp_path / f"{name}.log"
            procs.append(_spawn(conf, log))
            wait_until(lambda port=port: _healthy(port, procs[-1]), 20, f"{name} to connect")
        # Both run, each a share, together every partition (a joining process is given work).
        wait_until(lambda: all(_partitions(p) for p in ports)
                   and sorted(_partitions(ports[0]) + _partitions(ports[1])) == sorted(nonempty),
                   30, "the partitions to be split")
        publish(mosquitto, messages)
        wait_until(lambda: count_points(influxd, influx_db) >= total, 60, "every reading")

        def stored_by_process() -> list[float]:
            out = []
            for port in ports:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                out.append(float(text.split("\ningest_points_stored_total ")[1].split()[0]))
            return out

        # A process counts a batch once InfluxDB has answered its write, a moment after the
        # points are queryable: wait for the counters to catch up before comparing them.
        wait_until(lambda: sum(stored_by_process()) >= total, 15, "the stored counters")
        stored = stored_by_process()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(30) for proc in procs] == [0, 0]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert count_points(influxd, influx_db) == total
    assert sum(stored) == total, stored  # each partition in one process only
    assert min(stored) > 0, stored
