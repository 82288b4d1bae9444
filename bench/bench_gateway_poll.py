"""Benchmark: the gateway polling 100 Modbus TCP devices every second.

Serves 100 simulated devices (25 of each profile, one TCP port each) from this process
with firmware_sim, starts a local Mosquitto, and runs ``weijian gateway run`` as a child
process polling every device once a second (``timestamp = "device"``, spool fsync
``full``). After a warm-up it measures the gateway process's CPU time (user + system, from
``/proc/<pid>/stat``) over a fixed window and its peak RSS (``VmHWM``), and counts the
readings a subscriber received. The simulator and the subscriber are not counted.

Run: ``.venv/bin/python bench/bench_gateway_poll.py [--devices 100] [--seconds 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from procstat import cpu_seconds, peak_rss_mb

from firmware_sim.scenario import load_scenario
from firmware_sim.service import run_scenario
from weijian.demo.local_services import running_mosquitto

ROOT = Path(__file__).resolve().parent.parent
KINDS = [
    ("drinking_water", "wq-analyser", "free_chlorine, turbidity, ph, temperature, conductivity",
     'water_point = "finished"'),
    ("swimming_pool", "pool-controller", "free_chlorine, combined_chlorine, ph, orp, temperature", ""),
    ("medical_waste", "waste-store-logger", "temperature, humidity, door_open, weight", ""),
    ("cold_chain", "fridge-logger", "temperature, door_open, power_ok", 'storage = "refrigerated"'),
]


def registry_text(n: int) -> str:
    contact = '{ name = "测试", phone = "13800000000" }'
    out = [
        '[[districts]]\nid = "bench"\nname = "基准区"\nteam = "基准队"\nsupervisors = [' + contact + "]",
        f'[[units]]\nid = "bench-unit"\nname = "基准单位"\nlicence = "X-1"\ndistrict = "bench"\n'
        f"handler = {contact}\nhead = {contact}\n"
        'alarm_contacts = [{ name = "测试二", phone = "13800000001" },'
        ' { name = "测试三", phone = "13800000002" }]',
    ]
    refs = []
    for k, (kind, profile, metrics, extra) in enumerate(KINDS):
        quoted = ", ".join(f'"{m.strip()}"' for m in metrics.split(","))
        devices = ", ".join(
            f'{{ id = "d{i:03d}", profile = "{profile}", metrics = [{quoted}] }}' for i in range(k, n, 4)
        )
        refs += [f"bench-{kind.replace('_', '-')}/d{i:03d}" for i in range(k, n, 4)]
        out.append(
            f'[[sites]]\nid = "bench-{kind.replace("_", "-")}"\nname = "基准"\nkind = "{kind}"\n'
            f'district = "bench"\nunit = "bench-unit"\naddress = "基准路1号"\n{extra}\n'
            f"devices = [{devices}]"
        )
    out.append('[[gateways]]\nid = "gw-bench"\nname = "基准网关"\ndevices = [' +
               ", ".join(f'"{r}"' for r in refs) + "]")
    return "\n\n".join(out) + "\n"


def scenario_text(n: int) -> str:
    out = ['name = "bench-gateway"', "start = 2026-07-15T00:00:00+08:00", "speed = 1.0", "seed = 1"]
    for i in range(n):
        kind, profile, _, _ = KINDS[i % 4]
        out += ["[[devices]]", f'site_id = "bench-{kind.replace("_", "-")}"', f'device_id = "d{i:03d}"',
                f'profile = "{profile}"']
    return "\n".join(out) + "\n"


def gateway_config(tmp: Path, port: int, endpoints: list) -> str:  # type: ignore[type-arg]
    out = [
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntopic_root = "bench/v1"',
        f'[registry]\npath = "{tmp / "registry.toml"}"',
        '[gateway]\nid = "gw-bench"\npoll_interval_s = 1.0\ntimeout_s = 1.0\nstatus_interval_s = 30.0\n'
        'metrics_port = 0',
        f'[gateway.spool]\npath = "{tmp / "spool.sqlite"}"\nfsync = "full"',
    ]
    for ep in endpoints:
        out.append(
            f'[[gateway.devices]]\nsite_id = "{ep.site_id}"\ndevice_id = "{ep.device_id}"\n'
            f'host = "{ep.host}"\nport = {ep.port}\nunit_id = {ep.unit_id}\ntimestamp = "device"'
        )
    return "\n\n".join(out) + "\n"






async def run(n: int, seconds: float, warmup: float, tmp: Path, port: int) -> None:
    (tmp / "registry.toml").write_text(registry_text(n), encoding="utf-8")
    (tmp / "scenario.toml").write_text(scenario_text(n), encoding="utf-8")
    received: list[str] = []
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
    sub.on_message = lambda c, u, m: received.append(m.topic) if m.topic.endswith("/reading") else None
    sub.connect("127.0.0.1", port)
    sub.subscribe("bench/v1/#", qos=1)
    sub.loop_start()
    async with run_scenario(load_scenario(tmp / "scenario.toml")) as sim:
        config = tmp / "gateway.toml"
        config.write_text(gateway_config(tmp, port, sim.endpoints), encoding="utf-8")
        log = (tmp / "gateway.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "weijian.cli", "gateway", "run", "--config", str(config),
            cwd=ROOT, stderr=log,
        )
        try:
            await asyncio.sleep(warmup)
            cpu0, t0, n0 = cpu_seconds(proc.pid), time.monotonic(), len(received)
            await asyncio.sleep(seconds)
            cpu1, t1, n1 = cpu_seconds(proc.pid), time.monotonic(), len(received)
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
    sub.loop_stop()
    wall = t1 - t0
    print(json.dumps({
        "devices": n,
        "window_s": round(wall, 1),
        "gateway_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / wall, 2),
        "gateway_peak_rss_mb": round(rss, 1),
        "readings_received_per_s": round((n1 - n0) / wall, 1),
        "exit_code_after_sigterm": code,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gw-poll-") as name:
        tmp = Path(name)
        with running_mosquitto(tmp / "mosquitto") as broker:
            asyncio.run(run(args.devices, args.seconds, args.warmup, tmp, broker.port))


if __name__ == "__main__":
    main()
