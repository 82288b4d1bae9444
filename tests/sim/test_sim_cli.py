"""``weijian sim run`` as a person runs it: prints endpoints, serves, stops cleanly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pymodbus.client import ModbusSerialClient, ModbusTcpClient

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "weijian.cli", "sim", "run", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until_ready(proc: subprocess.Popen[str], timeout_s: float = 20) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("ready"):
            return lines
    proc.kill()
    raise AssertionError(f"not ready: {lines!r} {proc.stderr.read() if proc.stderr else ''}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sim_run_serves_the_printed_endpoints_and_exits_0_on_signal(sig: signal.Signals):
    proc = start("--scenario", "normal-day", "--speed", "60", "--seed", "3")
    try:
        lines = read_until_ready(proc)
        assert "12 devices" in lines[0] and "seed 3" in lines[0]
        tcp = [m for line in lines if (m := re.search(r"^(\S+)\s+(\S+).*tcp://([\d.]+):(\d+)$", line))]
        rtu = [m for line in lines if (m := re.search(r"unit (\d+)\s+rtu:(\S+) ", line))]
        assert len(tcp) == 10 and len(rtu) == 2
        water = next(m for m in tcp if m.group(1) == "yc-water-001/wq-01")
        client = ModbusTcpClient(water.group(3), port=int(water.group(4)), timeout=2, retries=0)
        assert client.connect()
        rr = client.read_input_registers(3, count=1, device_id=1)  # pH x 0.01
        client.close()
        assert 6.5 <= rr.registers[0] * 0.01 <= 8.5
        serial_client = ModbusSerialClient(rtu[1].group(2), baudrate=9600, timeout=2, retries=0)
        assert serial_client.connect()
        rr = serial_client.read_input_registers(0, count=1, device_id=int(rtu[1].group(1)))
        serial_client.close()
        assert 2.0 < rr.registers[0] * 0.1 < 8.0
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sim_run_bad_scenario_exits_2_naming_it(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n', encoding="utf-8")
    proc = start("--scenario", str(bad))
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "bad.toml" in err and "'start'" in err


def test_sim_list_names_scenarios_and_profiles():
    out = subprocess.run(
        [sys.executable, "-m", "weijian.cli", "sim", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    for name in ("normal-day", "device-silent", "fridge-logger", "wq-analyser-cdab"):
        assert name in out


def test_sim_run_start_override_and_endpoints_json(tmp_path: Path):
    out = tmp_path / "endpoints.json"
    proc = start("--scenario", "demo-city", "--speed", "0", "--start", "2026-11-23T00:00:00+08:00",
                 "--endpoints-json", str(out))
    try:
        lines = read_until_ready(proc)
        assert "starting 2026-11-23T00:00:00+08:00" in lines[0]
        data = json.loads(out.read_text())
        assert data["clock"]["speed"] == 0
        assert data["clock"]["origin"].startswith("2026-11-22T16:00:00")  # stopped clock, in UTC
        endpoints = data["endpoints"]
        assert len(endpoints) == 12
        fridge = next(e for e in endpoints if e["site_id"] == "yc-cc-001" and e["device_id"] == "fr-02")
        assert fridge["transport"] == "rtu" and fridge["serial_path"].startswith("/dev/pts/")
        water = next(e for e in endpoints if e["site_id"] == "yc-water-001")
        client = ModbusTcpClient(water["host"], port=water["port"], timeout=2, retries=0)
        assert client.connect()
        rr = client.read_holding_registers(100, count=2, device_id=1)  # the device clock (ABCD)
        client.close()
        assert (rr.registers[0] << 16 | rr.registers[1]) == 1795363200  # 2026-11-23T00:00+08:00
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sim_run_start_without_offset_exits_2():
    done = subprocess.run([sys.executable, "-m", "weijian.cli", "sim", "run", "--scenario", "demo-city",
                           "--start", "2026-11-23T00:00:00"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "--start" in done.stderr
