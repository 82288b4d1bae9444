"""Acceptance: broker outage, gateway SIGKILL, and a clean SIGTERM, with nothing lost."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.scenario import load_scenario
from firmware_sim.service import run_scenario
from tests.gateway.conftest import (
    ROOT,
    device_config,
    gateway_data,
    running_gateway,
    toml_dump,
    write_scenario,
)

DEVICES = [
    {"site_id": "yc-water-001", "device_id": "wq-01", "profile": "wq-analyser"},
    {"site_id": "yc-pool-001", "device_id": "pc-01", "profile": "pool-controller"},
    {"site_id": "yc-cc-001", "device_id": "fr-01", "profile": "fridge-logger"},
]


def spool_meta(path: Path) -> tuple[int, int]:
    """(last seq given out, rows queued), read from the spool file as another process would."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        seq = row[0] if row is not None else 0  # the file exists before its first seq is committed
        depth = db.execute("SELECT count(*) FROM queue").fetchone()[0]
    finally:
        db.close()
    return seq, depth


def check_complete_and_ordered(readings: list[dict[str, Any]], last_seq: int) -> None:
    """Every seq 1..last_seq arrived; in arrival order, each device's first copies increase."""
    seqs = {r["seq"] for r in readings}
    missing = set(range(1, last_seq + 1)) - seqs
    assert not missing, f"{len(missing)} readings lost, e.g. {sorted(missing)[:10]}"
    first_seen: dict[str, list[int]] = defaultdict(list)
    known: set[int] = set()
    for r in readings:
        if r["seq"] in known:
            continue  # a redelivery after a lost PUBACK; receivers drop it by seq
        known.add(r["seq"])
        first_seen[f"{r['site_id']}/{r['device_id']}"].append(r["seq"])
    for key, order in first_seen.items():
        assert order == sorted(order), f"{key}: readings out of order"
    by_seq = {}
    for r in readings:  # a redelivered seq carries the same reading
        assert by_seq.setdefault(r["seq"], r) == r


async def test_broker_outage_loses_nothing_and_keeps_order(
    tmp_path, fresh_mosquitto, topic_root, gw_registry, collector_for
):
    scenario = write_scenario(tmp_path / "three.toml", DEVICES)
    async with run_scenario(load_scenario(scenario), speed=0) as sim:
        devices = [device_config(ep) for ep in sim.endpoints]
        data = gateway_data(tmp_path, fresh_mosquitto, topic_root, gw_registry, devices, poll_interval_s=0.1)
        collector = collector_for(fresh_mosquitto, topic_root)
        async with running_gateway(data):
            await collector.wait_for(lambda c: len(c.readings()) >= 10, 10, "10 readings before the outage")
            fresh_mosquitto.stop()
            # Wait until at least 40 readings are queued while the broker is down (not a fixed time).
            _, before = await asyncio.to_thread(spool_meta, tmp_path / "spool.sqlite")
            during, _ = await _wait_spool(tmp_path / "spool.sqlite", lambda _seq, depth: depth >= before + 40,
                                          20, "40 readings queued during the outage")
            fresh_mosquitto.start()
            await collector.wait_for(
                lambda c: {r["seq"] for r in c.readings()} >= set(range(1, during + 1)),
                20,
                f"every reading up to seq {during} after the broker came back",
            )
        last_seq, depth = spool_meta(tmp_path / "spool.sqlite")
    assert depth == 0  # the clean stop drained the spool
    await collector.wait_for(lambda c: len({r["seq"] for r in c.readings()}) >= last_seq, 10, "the drain")
    readings = collector.readings()
    assert during >= 40
    check_complete_and_ordered(readings, last_seq)


async def _start_gateway(config: Path, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "weijian.cli", "gateway", "run", "--config", str(config),
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=log.open("ab"),
    )


async def _wait_spool(path: Path, predicate, timeout_s: float, what: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            meta = await asyncio.to_thread(spool_meta, path)
        except sqlite3.OperationalError:
            meta = (0, 0)  # not created yet, or schema not yet committed
        if predicate(*meta):
            return meta
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_sigkill_with_readings_queued_then_restart_delivers_them_all(
    tmp_path, fresh_mosquitto, topic_root, gw_registry, collector_for
):
    scenario = write_scenario(tmp_path / "three.toml", DEVICES)
    spool = tmp_path / "spool.sqlite"
    log = tmp_path / "gateway.log"
    async with run_scenario(load_scenario(scenario), speed=0) as sim:
        devices = [device_config(ep) for ep in sim.endpoints]
        config = tmp_path / "gateway.toml"
        data = gateway_data(tmp_path, fresh_mosquitto, topic_root, gw_registry, devices, poll_interval_s=0.1)
        data["gateway"]["spool"]["fsync"] = "full"
        config.write_text(toml_dump(data), encoding="utf-8")
        fresh_mosquitto.stop()  # the link is down: readings pile up in the spool
        first = await _start_gateway(config, log)
        try:
            await _wait_spool(spool, lambda seq, depth: depth >= 30, 20, "30 readings queued")
        finally:
            first.kill()  # SIGKILL: no flush, no goodbye (and no orphan if the wait failed)
        assert await first.wait() == -signal.SIGKILL
        killed_seq, killed_depth = spool_meta(spool)
        assert killed_depth == killed_seq  # nothing was published, nothing lost yet
        fresh_mosquitto.start()
        collector = collector_for(fresh_mosquitto, topic_root)
        second = await _start_gateway(config, log)
        try:
            await collector.wait_for(
                lambda c: {r["seq"] for r in c.readings()} >= set(range(1, killed_seq + 1)),
                20,
                f"the {killed_seq} readings queued before the SIGKILL",
            )
            await collector.wait_for(
                lambda c: any(r["seq"] > killed_seq for r in c.readings()), 10, "new readings"
            )
        finally:
            second.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(second.wait(), 20)
    assert code == 0, log.read_text()[-2000:]
    last_seq, depth = spool_meta(spool)
    assert depth == 0
    await collector.wait_for(lambda c: len({r["seq"] for r in c.readings()}) >= last_seq, 10, "the drain")
    check_complete_and_ordered(collector.readings(), last_seq)
    statuses = collector.statuses()
    assert statuses[-1]["state"] == "offline"
    assert '"gateway.stopped"' in log.read_text()


async def test_the_broker_publishes_offline_as_last_will_when_the_gateway_dies(
    tmp_path, mosquitto, topic_root, gw_registry, collector_for
):
    scenario = write_scenario(tmp_path / "one.toml", DEVICES[:1])
    log = tmp_path / "gateway.log"
    async with run_scenario(load_scenario(scenario), speed=0) as sim:
        config = tmp_path / "gateway.toml"
        data = gateway_data(tmp_path, mosquitto, topic_root, gw_registry, [device_config(sim.endpoints[0])])
        config.write_text(toml_dump(data), encoding="utf-8")
        collector = collector_for(mosquitto, topic_root)
        proc = await _start_gateway(config, log)
        try:
            await collector.wait_for(
                lambda c: any(s["state"] == "online" for s in c.statuses()), 15, "the online status"
            )
        finally:
            proc.kill()
            await proc.wait()
        await collector.wait_for(
            lambda c: c.statuses()[-1]["state"] == "offline", 10, "the last will"
        )
    will = collector.statuses()[-1]
    assert will["gateway_id"] == "gw-test"
    assert "queue_depth" not in will  # the will, not a status the gateway sent itself


async def test_a_full_spool_drops_the_oldest_and_the_status_counts_them(
    tmp_path, fresh_mosquitto, topic_root, gw_registry, collector_for
):
    scenario = write_scenario(tmp_path / "three.toml", DEVICES)
    spool = tmp_path / "spool.sqlite"
    async with run_scenario(load_scenario(scenario), speed=0) as sim:
        devices = [device_config(ep) for ep in sim.endpoints]
        data = gateway_data(tmp_path, fresh_mosquitto, topic_root, gw_registry, devices, poll_interval_s=0.05)
        data["gateway"]["spool"]["max_rows"] = 100
        collector = collector_for(fresh_mosquitto, topic_root)
        fresh_mosquitto.stop()
        async with running_gateway(data):
            await _wait_spool(spool, lambda seq, depth: seq >= 160, 20, "160 readings taken offline")
            fresh_mosquitto.start()
            await collector.wait_for(
                lambda c: any(s.get("dropped", 0) >= 60 for s in c.statuses()), 15, "a status with drops"
            )
        last_seq, depth = spool_meta(spool)
    assert depth == 0
    await collector.wait_for(lambda c: max(r["seq"] for r in c.readings()) == last_seq, 10, "the drain")
    received = {r["seq"] for r in collector.readings()}
    lost = set(range(1, last_seq + 1)) - received
    final = collector.statuses()[-1]
    assert final["state"] == "offline"
    assert len(lost) == final["dropped"] >= 60  # every loss is counted, and only losses
    assert set(range(last_seq - 10, last_seq + 1)) <= received  # the newest stayed
