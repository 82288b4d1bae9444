"""Helpers for the end-to-end pipeline tests: a registry cut down to one scenario's devices,
written as TOML, and one ``weijian demo`` run as a subprocess whose results are read back from
the outside (tasks.sqlite, sms.jsonl, the ``alert`` measurement in InfluxDB).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_sim.scenario import load_scenario
from weijian.demo.local_services import start_influxd

EXAMPLE_REGISTRY = Path(__file__).resolve().parents[2] / "examples" / "registry.toml"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML: {v!r}")


def dump_toml(data: dict[str, Any]) -> str:
    """TOML for a registry-shaped document: top-level scalars and arrays of tables, whose
    entries hold scalars, arrays and inline tables (all a registry uses)."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items()
             if not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))]
    for name, items in data.items():
        if isinstance(items, list) and items and all(isinstance(x, dict) for x in items):
            for item in items:
                lines.append(f"\n[[{_key(name)}]]")
                lines += [f"{_key(k)} = {_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def scenario_devices(scenario: str) -> set[str]:
    """The scenario's devices as ``site_id/device_id``."""
    return {f"{d.site_id}/{d.device_id}" for d in load_scenario(scenario).devices}


def scenario_profiles(scenario: str) -> list[Any]:
    """The device profiles the scenario uses (each knows its kind)."""
    return list(load_scenario(scenario).profiles.values())


def write_scenario_registry(scenario: str, path: Path) -> Path:
    """examples/registry.toml with every district and unit, but only the scenario's devices,
    the sites that hold them and the gateways that serve them: a registered device the scenario
    does not simulate would rightly raise a data-interruption alert of its own."""
    keep = scenario_devices(scenario)
    data = tomllib.loads(EXAMPLE_REGISTRY.read_text(encoding="utf-8"))
    sites = []
    for site in data["sites"]:
        devices = [d for d in site["devices"] if f"{site['id']}/{d['id']}" in keep]
        if devices:
            sites.append(site | {"devices": devices})
    gateways = []
    for gateway in data["gateways"]:
        served = [ref for ref in gateway["devices"] if ref in keep]
        if served:
            gateways.append(gateway | {"devices": served})
    cut = data | {"sites": sites, "gateways": gateways}
    path.write_text(dump_toml(cut), encoding="utf-8")
    return path


@dataclass
class DemoRun:
    """What one ``weijian demo`` run left behind, read from the outside after it exited."""

    workdir: Path
    returncode: int
    output: str
    alerts: list[dict[str, Any]]  # rows of alerts_alerts
    tasks: list[dict[str, Any]]  # rows of alerts_tasks
    sms: list[dict[str, Any]]  # lines of sms.jsonl
    events: list[dict[str, Any]]  # points of the InfluxDB ``alert`` measurement (time in ns)
    points: dict[str, list[dict[str, Any]]]  # stored readings by measurement (kind), time in ns
    quarantined: list[dict[str, Any]]  # rows of ingest's quarantine: messages it refused

    def logs(self, tail: int = 40) -> str:
        """The last lines of every process log, for an assertion message."""
        out = []
        for log in sorted((self.workdir / "logs").glob("*.log")):
            out.append(f"--- {log.name}")
            out += log.read_text(errors="replace").splitlines()[-tail:]
        return "\n".join(out)


def _rows(db: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute(f"SELECT * FROM {table}")]


def run_demo(scenario: str, workdir: Path, *, speed: float, duration_s: float) -> DemoRun:
    """Run ``weijian demo`` for ``scenario`` on a registry of its devices only, then read back
    the task database, the SMS inbox's file and the ``alert`` measurement."""
    registry = write_scenario_registry(scenario, workdir.parent / f"{scenario}-registry.toml")
    done = subprocess.run(
        [sys.executable, "-m", "weijian.cli", "demo", "--scenario", scenario,
         "--speed", f"{speed:g}", "--duration", f"{duration_s:g}",
         "--workdir", str(workdir), "--registry", str(registry)],
        capture_output=True, text=True, timeout=duration_s + 90,
    )
    output = done.stdout[-3000:] + done.stderr[-3000:]
    tasks_db = workdir / "tasks.sqlite"
    alerts: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    if tasks_db.exists():
        with sqlite3.connect(f"file:{tasks_db}?mode=ro", uri=True) as db:
            alerts, tasks = _rows(db, "alerts_alerts"), _rows(db, "alerts_tasks")
    quarantined: list[dict[str, Any]] = []
    if (workdir / "quarantine.sqlite").exists():
        with sqlite3.connect(f"file:{workdir / 'quarantine.sqlite'}?mode=ro", uri=True) as db:
            quarantined = _rows(db, "quarantine")
    sms_file = workdir / "sms.jsonl"
    sms = ([json.loads(line) for line in sms_file.read_text(encoding="utf-8").splitlines()]
           if sms_file.exists() else [])
    points: dict[str, list[dict[str, Any]]] = {}
    if (workdir / "influxdb").exists():
        # The demo stopped its InfluxDB; start one on the same data to look from the outside.
        influx = start_influxd(workdir / "influxdb")
        try:
            for measurement in ["alert", *sorted({p.kind.value for p in scenario_profiles(scenario)})]:
                points[measurement] = [
                    dict(zip(series["columns"], row, strict=True))
                    for series in influx.query(f'SELECT * FROM "{measurement}"', "weijian", epoch="ns")
                    for row in series["values"]
                ]
        finally:
            influx.stop()
    events = points.pop("alert", [])
    return DemoRun(workdir, done.returncode, output, alerts, tasks, sms, events, points, quarantined)
