"""``weijian demo``, checked from the outside: data, tasks and SMS per kind, and no leftovers."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dashboards.boards import BoardOptions, build_all, panel_targets, to_json
from dashboards.templating import TimeRange, substitute
from weijian.contract import Kind
from weijian.demo.local_services import Influx, start_influxd
from weijian.registry import Registry, load_registry
from weijian.rules import default_rule_packs

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "registry.toml"


def processes_using(workdir: Path) -> list[str]:
    """Processes whose command line or working directory mentions ``workdir``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (str(workdir) in cmdline or cwd.startswith(str(workdir))):
            found.append(f"{pid}: {cmdline}")
    return found


def ports_of(workdir: Path) -> set[int]:
    """Every TCP port the demo's services and simulated devices listened on."""
    ports = set()
    endpoints = workdir / "endpoints.json"
    if endpoints.exists():
        ports |= {e["port"] for e in json.loads(endpoints.read_text())["endpoints"] if e["port"]}
    for conf in [workdir / "mosquitto" / "mosquitto.conf", workdir / "influxdb" / "influxdb.conf"]:
        if conf.exists():
            for line in conf.read_text().splitlines():
                if line.startswith("listener "):
                    ports.add(int(line.split()[1]))
                elif "bind-address" in line:
                    ports.add(int(line.rsplit(":", 1)[1].strip('"')))
    return ports


def assert_nothing_left(workdir: Path) -> None:
    deadline = time.monotonic() + 10
    while (left := processes_using(workdir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, left
    for port in ports_of(workdir):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # raises if something still listens there


def test_a_short_accelerated_demo_gives_data_tasks_and_sms_for_every_kind(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "weijian.cli", "demo", "--duration", "32", "--speed", "2880",
         "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=150,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "总结 summary" in done.stdout
    assert_nothing_left(workdir)

    registry = load_registry(EXAMPLE)
    kind_of = {site.id: site.kind.value for site in registry.sites.values()}
    with sqlite3.connect(workdir / "tasks.sqlite") as db:
        tasks = Counter(kind_of[s] for (s,) in db.execute("SELECT site_id FROM alerts_tasks"))
    sms = [json.loads(line) for line in (workdir / "sms.jsonl").read_text().splitlines()]
    texted = Counter(kind_of[m["site_id"]] for m in sms if m.get("site_id") in kind_of)

    # The demo stopped its InfluxDB; start one on the same data to look from the outside.
    influx = start_influxd(workdir / "influxdb")
    try:
        stored = {}
        for kind in Kind:
            series = influx.query(f'SELECT count("temperature") FROM "{kind.value}"', "weijian")
            stored[kind.value] = series[0]["values"][0][1] if series else 0
        clock = json.loads((workdir / "endpoints.json").read_text())["clock"]
        day = datetime.fromisoformat(clock["origin"])
        # The demo's data can be reported: its ingest.toml, on this InfluxDB.
        month = day.astimezone(timezone(timedelta(hours=8))).strftime("%Y-%m")
        report = subprocess.run(
            [sys.executable, "-m", "weijian", "report", "monthly", "--month", month, "--config",
             str(workdir / "ingest.toml"), "--out", str(workdir / "report")],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "WEIJIAN_INFLUX__URL": influx.url},
        )
        assert report.returncode == 0, report.stderr[-3000:]
        assert Path(report.stdout.split()[0]).suffix == ".pdf" and Path(report.stdout.split()[0]).is_file()
        # 18:30 local: the pool's chlorine alert is open and the rural analyser is silent.
        every_dashboard_query_returns_rows(influx, registry, TimeRange(day, day + timedelta(hours=18.5)))
    finally:
        influx.stop()
    for kind in Kind:
        assert stored[kind.value] > 50, stored
        assert tasks[kind.value] >= 1, tasks
        assert texted[kind.value] >= 1, texted
    assert all(m["text"].startswith("【卫监") for m in sms)


def unmeasured(query: str, registry: Registry) -> bool:
    """A metric panel for a metric no registered device of that kind measures stays empty."""
    for kind in Kind:
        if f'FROM "{kind.value}"' in query:
            measured = {m for site in registry.sites.values() if site.kind is kind
                        for d in site.devices for m in d.metrics}
            return not any(f'mean("{m}")' in query or f'last("{m}")' in query for m in measured)
    return False


def every_dashboard_query_returns_rows(influx: Influx, registry: Registry, day: TimeRange) -> None:
    """Issue 7's proof on data that went sensor -> gateway -> MQTT -> ingest -> InfluxDB:
    every InfluxQL target of every dashboard, variables set to everything, returns rows."""
    # The demo polls every 6 simulated minutes.
    options = BoardOptions(expected_interval_s=360, silent_after_min=15, registry=registry)
    variables = {"district": sorted(registry.districts), "site": sorted(registry.sites),
                 "device": sorted({d.id for _, d in registry.devices()})}
    empty, ran = [], 0
    for board in (to_json(b) for b in build_all(default_rule_packs(), options)):
        # The statistics board shows monthly points (at a month's start): its range is months.
        monthly = board["uid"] == "weijian-statistics"
        span = TimeRange(day.start - timedelta(days=40), day.end) if monthly else day
        for title, target in panel_targets(board):
            if target["datasource"]["type"] != "influxdb":
                continue
            query = substitute(target["query"], span, variables)
            series = influx.query(query, "weijian")
            ran += 1
            if not series and not unmeasured(query, registry):
                empty.append(f"{board['title']} / {title}")
    assert ran >= 40
    assert not empty, empty


@pytest.mark.parametrize("after_s", [1.5, 9.0])
def test_ctrl_c_at_any_moment_leaves_no_process_behind(tmp_path: Path, after_s: float) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "weijian.cli", "demo", "--duration", "120", "--workdir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(after_s)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 1, 130)
    assert_nothing_left(workdir)
