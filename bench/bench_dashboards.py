"""Benchmark: how long a duty-desk dashboard takes to refresh against a realistic InfluxDB.

Fills a local InfluxDB 1.x with a simulated day of demo-city's 15 devices at the gateway's
default 60 s poll, replicated ``--copies`` times under fresh site ids (default 20: 240
devices, about 340,000 points), plus alert state changes. Then runs every InfluxQL query of
the overview and of each kind's dashboard, variables substituted as Grafana would, ``--rounds``
times, and reports the wall time of a whole refresh (queries in sequence, as the worst case)
and the slowest single query. Loopback only; bounded by ``--rounds`` and ``--copies``.

Run: ``.venv/bin/python bench/bench_dashboards.py [--copies 20] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "dashboards"))

from simday import _alerts, _readings, alert_line, reading_line  # noqa: E402

from dashboards.boards import BoardOptions, build_all, panel_targets, to_json  # noqa: E402
from dashboards.templating import ALL, TimeRange, substitute  # noqa: E402
from weijian.demo.local_services import start_influxd  # noqa: E402
from weijian.registry import load_registry  # noqa: E402
from weijian.rules import default_rule_packs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    registry = load_registry(ROOT / "examples" / "registry.toml")
    packs = default_rule_packs()
    readings = list(_readings(registry, "demo-city", 60.0))
    alerts = _alerts(readings, registry, packs)
    lines: list[str] = []
    for copy in range(args.copies):
        suffix = f"-c{copy:02d}" if copy else ""
        for r in readings:
            line = reading_line(r, registry.sites[r.site_id].district)
            lines.append(line.replace(f"site_id={r.site_id}", f"site_id={r.site_id}{suffix}"))
        for a in alerts:
            lines.append(alert_line(a).replace(f"site_id={a.site_id}", f"site_id={a.site_id}{suffix}"))
    start = min(r.ts for r in readings)
    boards = [to_json(b) for b in build_all(packs, BoardOptions(60.0, 15, registry))]
    with tempfile.TemporaryDirectory() as tmp:
        influx = start_influxd(Path(tmp))
        try:
            influx.query('CREATE DATABASE "bench"')
            t0 = time.perf_counter()
            for i in range(0, len(lines), 10_000):
                httpx.post(f"{influx.url}/write", params={"db": "bench"},
                           content="\n".join(lines[i:i + 10_000]).encode(), timeout=60).raise_for_status()
            write_s = time.perf_counter() - t0
            print(f"wrote {len(lines):,} points in {write_s:.1f} s ({len(lines) / write_s:,.0f}/s)")
            day = TimeRange(start, start + timedelta(hours=18, minutes=30))
            every = {"district": [ALL], "site": [ALL], "device": [ALL]}
            one = {"district": ["chengguan"], "site": ["yc-water-001"], "device": ["wq-01"]}
            for label, variables in (("All", every), ("one site", one)):
                for board in boards:
                    is_site = board["uid"] == "weijian-site"
                    if board["uid"] == "weijian-tasks" or (label == "one site") != is_site:
                        continue
                    queries = [substitute(t["query"], day, variables) for _, t in panel_targets(board)
                               if t["datasource"]["type"] == "influxdb"]
                    refreshes, slowest = [], 0.0
                    for _ in range(args.rounds):
                        t_board = time.perf_counter()
                        for q in queries:
                            t_q = time.perf_counter()
                            influx.query(q, "bench")
                            slowest = max(slowest, time.perf_counter() - t_q)
                        refreshes.append(time.perf_counter() - t_board)
                    print(f"{board['uid']:<24} ({label:<8}) {len(queries):>2} queries  refresh median "
                          f"{statistics.median(refreshes) * 1000:7.1f} ms  "
                          f"max {max(refreshes) * 1000:7.1f} ms  slowest query {slowest * 1000:7.1f} ms")
        finally:
            influx.stop()


if __name__ == "__main__":
    main()
