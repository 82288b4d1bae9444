"""Benchmark: `weijian report monthly` over one month of 1,000 devices at one reading a minute.

Starts its own InfluxDB 1.x (Debian's influxd) in a temporary folder, writes a registry of N
cold-chain fridges (10 districts, each fridge its own site, `interval_s = 60`), and fills the
month (30 days x 1,440 minutes x N readings: 43.2 M points for N = 1,000) with believable
readings: temperature around 5 °C with a few excursions above 8 °C, door and mains state, about
1 % of the values flagged M or D, and a gap of a few hours on some devices. Then it runs
`weijian report monthly --no-store` as a child process (a fresh SQLite tasks database) and
reports its wall time, CPU time and peak RSS, with the time InfluxDB took to ingest the month.

Run: ``.venv/bin/python bench/bench_report.py [--devices 1000] [--days 30]``
(about 43 M points, several minutes of writing and about 2 GB of disk for the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procstat import cpu_seconds, peak_rss_mb  # noqa: E402

from weijian.demo.local_services import running_influxd  # noqa: E402

CHINA = timezone(timedelta(hours=8))
CONTACT = '{ name = "测试", phone = "13800000000" }'
EXTRA = '{ name = "甲", phone = "13800000001" }, { name = "乙", phone = "13800000002" }'
DISTRICTS = 10


def registry(n: int) -> str:
    out = []
    for d in range(DISTRICTS):
        out.append(
            f'[[districts]]\nid = "d{d:02d}"\nname = "区{d:02d}"\nteam = "队{d:02d}"\n'
            f"supervisors = [{CONTACT}]"
        )
        out.append(
            f'[[units]]\nid = "u{d:02d}"\nname = "单位{d:02d}"\nlicence = "X-{d}"\ndistrict = "d{d:02d}"\n'
            f"handler = {CONTACT}\nhead = {CONTACT}\nalarm_contacts = [{EXTRA}]"
        )
    for i in range(n):
        d = i % DISTRICTS
        out.append(
            f'[[sites]]\nid = "cc-{i:04d}"\nname = "冷链点{i:04d}"\nkind = "cold_chain"\n'
            f'district = "d{d:02d}"\n'
            f'unit = "u{d:02d}"\naddress = "基准路{i}号"\nstorage = "refrigerated"\n'
            'devices = [{ id = "fr-01", profile = "fridge-logger", '
            'metrics = ["temperature", "door_open", "power_ok"], interval_s = 60 }]'
        )
    refs = ", ".join(f'"cc-{i:04d}/fr-01"' for i in range(n))
    out.append(f'[[gateways]]\nid = "gw-b"\nname = "基准网关"\ndevices = [{refs}]')
    return "\n\n".join(out) + "\n"


def lines_for(i: int, start: datetime, minutes: int, rng: random.Random) -> list[str]:
    d = i % DISTRICTS
    tags = f"cold_chain,device_id=fr-01,district=d{d:02d},gateway_id=gw-b,site_id=cc-{i:04d}"
    t0 = int(start.timestamp())
    gap = range(rng.randrange(minutes), minutes) if i % 50 == 0 else range(0)
    gap = range(gap.start, min(gap.start + 240, minutes)) if gap else gap
    out = []
    for m in range(minutes):
        if m in gap:
            continue
        temp = 5.0 + 1.5 * rng.random() + (4.0 if m % 10_000 < 30 and i % 7 == 0 else 0.0)
        fields = f"temperature={temp:.2f},door_open={int(m % 600 < 3)},power_ok=1"
        if m % 97 == 0:
            fields += ',temperature_flag="M"'
        elif m % 211 == 0:
            fields = 'temperature_flag="D",door_open=0,power_ok=1'
        out.append(f"{tags} {fields} {t0 + 60 * m}")
    return out


async def fill(url: str, n: int, start: datetime, minutes: int) -> int:
    sem = asyncio.Semaphore(3)
    total = 0

    async def one(client: httpx.AsyncClient, body: bytes) -> None:
        async with sem:
            r = await client.post(f"{url}/write", params={"db": "bench", "precision": "s"}, content=body)
            r.raise_for_status()

    async with httpx.AsyncClient(timeout=300) as client:
        await client.post(f"{url}/query", params={"q": "CREATE DATABASE bench"})
        pending: list[asyncio.Task[None]] = []
        for i in range(n):
            lines = lines_for(i, start, minutes, random.Random(i))
            total += len(lines)
            for k in range(0, len(lines), 20_000):
                pending.append(asyncio.create_task(one(client, "\n".join(lines[k : k + 20_000]).encode())))
            if len(pending) > 12:
                await asyncio.gather(*pending)
                pending = []
            if i % 100 == 99:
                print(f"  written {i + 1} devices, {total:,} points", file=sys.stderr, flush=True)
        await asyncio.gather(*pending)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    start = datetime(2026, 11, 1, tzinfo=CHINA)
    with (
        tempfile.TemporaryDirectory(prefix="bench-report-") as tmp_s,
        running_influxd(Path(tmp_s) / "influx") as influx,
    ):
        tmp = Path(tmp_s)
        (tmp / "registry.toml").write_text(registry(args.devices), encoding="utf-8")
        (tmp / "central.toml").write_text(
            f'[tasks]\nurl = "sqlite:///{tmp / "tasks.sqlite"}"\n'
            f'[registry]\npath = "{tmp / "registry.toml"}"\n'
            f'[influx]\nurl = "{influx.url}"\ndatabase = "bench"\ntimeout_s = 3600\n',
            encoding="utf-8",
        )
        t0 = time.monotonic()
        points = asyncio.run(fill(influx.url, args.devices, start, args.days * 1440))
        wrote_s = time.monotonic() - t0
        print(f"wrote {points:,} points in {wrote_s:.0f} s ({points / wrote_s:,.0f}/s)", file=sys.stderr)
        month = "2026-11" if args.days == 30 else None
        assert month, "--days other than 30 is a partial month: the report still covers 2026-11"
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "weijian",
                "report",
                "monthly",
                "--month",
                "2026-11",
                "--no-store",
                "--out",
                str(tmp / "out"),
                "--config",
                str(tmp / "central.toml"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        cpu, rss = 0.0, 0.0
        while proc.poll() is None:
            cpu = max(cpu, cpu_seconds(proc.pid) or 0.0)
            rss = max(rss, peak_rss_mb(proc.pid) or 0.0)
            time.sleep(0.2)
        took = time.monotonic() - t0
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        print(err.strip(), file=sys.stderr)
        print(
            "| devices | points | InfluxDB ingest | report wall time | report CPU | report peak RSS | files |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        print(
            f"| {args.devices:,} | {points:,} | {wrote_s:.0f} s | {took:.1f} s | {cpu:.1f} s | "
            f"{rss:.0f} MB | "
            f"{len(out.split())} |"
        )


if __name__ == "__main__":
    main()
