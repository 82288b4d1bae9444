"""Benchmark: one simulator process serving 200 Modbus TCP devices on loopback.

Writes a scenario with 200 devices (50 of each kind), starts ``weijian sim run`` on it in a
child process, then drives every device from this process with minimal hand-written Modbus
TCP clients (one connection per device, one request in flight each, reading the device's
main register block) for a fixed time. Reports requests answered per second and the
simulator process's CPU use (from /proc), so the client's cost is not counted.

Run: ``.venv/bin/python bench/bench_sim.py [--devices 200] [--seconds 10] [--speed 1440]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procstat import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
PROFILES = [
    # (profile, function code, address, count): each model's main block
    ("wq-analyser", 4, 0, 7),
    ("pool-controller", 3, 0, 7),
    ("waste-store-logger", 4, 0, 4),
    ("fridge-logger", 4, 0, 2),
]


def scenario_text(n: int) -> str:
    out = [
        'name = "bench"',
        "start = 2026-07-15T00:00:00+08:00",
        "speed = 1440.0",
        "seed = 1",
    ]
    for i in range(n):
        profile = PROFILES[i % 4][0]
        out += ["[[devices]]", f'site_id = "bench-{i:03d}"', 'device_id = "d1"', f'profile = "{profile}"']
    return "\n".join(out) + "\n"




async def drive(port: int, fc: int, address: int, count: int, stop_at: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered = 0
    tid = 0
    expect = 9 + 2 * count
    try:
        while time.monotonic() < stop_at:
            tid = (tid + 1) & 0xFFFF
            writer.write(struct.pack(">HHHBBHH", tid, 0, 6, 1, fc, address, count))
            reply = await reader.readexactly(expect)
            if struct.unpack_from(">H", reply)[0] != tid or reply[7] != fc:
                raise RuntimeError(f"bad reply on port {port}: {reply.hex()}")
            answered += 1
    finally:
        writer.close()
        await writer.wait_closed()
    return answered


async def load(ports: dict[str, int], seconds: float, pid: int) -> tuple[int, float, float]:
    """Drive every device until the deadline; returns (answered, wall s, simulator CPU s)."""
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    stop_at = wall0 + seconds
    async with asyncio.TaskGroup() as tg:
        tasks = []
        for i, (site, port) in enumerate(sorted(ports.items())):
            _, fc, address, count = PROFILES[i % 4]
            tasks.append(tg.create_task(drive(port, fc, address, count, stop_at), name=f"drive-{site}"))
    return sum(t.result() for t in tasks), time.monotonic() - wall0, cpu_seconds(pid) - cpu0


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(scenario_text(args.devices), encoding="utf-8")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "weijian.cli",
                "--log-level",
                "WARNING",
                "sim",
                "run",
                "--scenario",
                str(path),
                "--speed",
                str(args.speed),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            ports: dict[str, int] = {}
            for line in proc.stdout:
                if line.startswith("ready"):
                    break
                m = re.match(r"(bench-\d+)/d1\s+(\S+)\s+unit \d+\s+tcp://[\d.]+:(\d+)", line)
                if m:
                    ports[m.group(1)] = int(m.group(3))
            assert len(ports) == args.devices, f"only {len(ports)} endpoints"
            total, wall, cpu = asyncio.run(load(ports, args.seconds, proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"devices:            {args.devices} (Modbus TCP, one connection each, loopback)")
    print(f"duration:           {wall:.1f} s, speed {args.speed:g}x")
    print(f"requests answered:  {total} ({total / wall:.0f} per second)")
    print(f"simulator CPU:      {cpu:.1f} s = {100 * cpu / wall:.0f}% of one core")
    print(f"CPU per request:    {1e6 * cpu / max(total, 1):.0f} us")
    print(f"machine:            {os.cpu_count()} cores, Python {sys.version.split()[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--speed", type=float, default=1440.0)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
