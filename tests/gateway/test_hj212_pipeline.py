"""HJ 212 acceptance at the level of the running programs: simulated data loggers (firmware_sim,
both editions, with field faults) push a simulated day to `weijian gateway run`, which spools
and publishes to a real Mosquitto, from which `weijian ingest run` stores into a real InfluxDB.
Every value stored is compared with what the loggers meant to send; and the host commands are
sent through `weijian gateway hj212`, as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from firmware_sim.hj212_logger import Faults, LoggerSpec, SimulatedLogger, Upload
from gateway import hj212
from tests.e2e.conftest import dump_toml
from tests.gateway.conftest import GATEWAY_ID, ROOT, gateway_data, running_gateway, toml_dump
from tests.gateway.hj212_upstream import Upstream
from weijian.demo.local_services import free_port
from weijian.registry import load_registry

KEY = bytes.fromhex("30" * 16)
FACTORS = {"w01001": "ph", "w01003": "turbidity", "w01010": "temperature", "w99001": "free_chlorine"}
SPREAD = {"w01001": (7.2, 0.3), "w01003": (0.4, 0.2), "w01010": (18.0, 3.0), "w99001": (0.5, 0.2)}
E17, E25 = hj212.Edition.HJ212_2017, hj212.Edition.HJ212_2025


def hj_sites_registry(path: Path, n: int) -> Path:
    """examples/registry.toml's districts and units, with n water stations read by HJ 212 loggers."""
    data = tomllib.loads((ROOT / "examples" / "registry.toml").read_text(encoding="utf-8"))
    site = next(s for s in data["sites"] if s["kind"] == "drinking_water")
    device = {"id": "wq-01", "profile": "wq-hj212-logger", "metrics": sorted(FACTORS.values())}
    data["sites"] = [site | {"id": f"hj-water-{i:03d}", "name": f"数采仪水站{i}", "devices": [device]}
                     for i in range(n)]
    data["gateways"] = [{"id": GATEWAY_ID, "name": "测试网关",
                         "devices": [f"hj-water-{i:03d}/wq-01" for i in range(n)]}]
    path.write_text(dump_toml(data), encoding="utf-8")
    load_registry(path)
    return path


def mn(i: int) -> str:
    return f"010000A8900016F0001{i:05X}"


def specs() -> list[tuple[LoggerSpec, str]]:
    """Ten loggers (the upload each one's gateway entry stores), faults spread among them."""
    day_faults = [
        Faults(bad_crc=0.05), Faults(split=True, join=True), Faults(retry=0.1), Faults(flags=0.1),
        Faults(outage=(timedelta(hours=10), timedelta(hours=10, minutes=30))),
        Faults(split=True, retry=0.05, outage=(timedelta(hours=3), timedelta(hours=3, minutes=30))),
        Faults(join=True), Faults(flags=0.05),
        Faults(bad_crc=0.02, join=True), Faults(),
    ]
    store = ["2011"] * 7 + ["2051", "2061", "2031"]
    out = []
    for i, faults in enumerate(day_faults):
        edition = E25 if i % 2 else E17
        out.append((LoggerSpec(mn=mn(i), password=f"{100000 + i}", edition=edition,
                               key=KEY if edition is E25 and i % 4 == 1 else None,
                               factors=SPREAD, rtd_interval_s=60, faults=faults), store[i]))
    return out


def logger_entries(loggers: list[tuple[LoggerSpec, str]], **extra: Any) -> list[dict[str, Any]]:
    return [{"mn": s.mn, "password": s.password, "site_id": f"hj-water-{i:03d}", "device_id": "wq-01",
             "store_cn": cn, **({"key": s.key.hex()} if s.key else {}), **extra}
            for i, (s, cn) in enumerate(loggers)]


def ingest_toml(tmp_path: Path, mosquitto: Any, influxd: Any, database: str, root: str, registry: Path,
                metrics_port: int) -> Path:
    path = tmp_path / "ingest.toml"
    path.write_text(toml_dump({
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "topic_root": root},
        "influx": {"url": influxd.url, "database": database},
        "registry": {"path": str(registry)},
        "ingest": {"client_id": f"ingest-{root.split('/')[0]}",
                   "spool_path": str(tmp_path / "i-spool.sqlite"),
                   "quarantine_path": str(tmp_path / "quarantine.sqlite"),
                   "dedup_path": str(tmp_path / "dedup.sqlite"), "metrics_port": metrics_port,
                   "alerts": False, "batch_interval_s": 0.05},
    }), encoding="utf-8")
    return path


async def weijian(*args: str, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "weijian", *args, cwd=ROOT,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=log.open("ab"))


async def wait_ready(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    """Until ingest's /healthz says it has subscribed (what is published before is not its)."""
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if proc.returncode is not None:
                pytest.fail(f"ingest exited {proc.returncode}: see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).json().get("ready"):
                    return
            await asyncio.sleep(0.1)
    pytest.fail("ingest never became ready")


async def wait_listening(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    for _ in range(300):
        if proc.returncode is not None:
            pytest.fail(f"the gateway exited {proc.returncode}: see {log}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    pytest.fail("the gateway's HJ 212 listener never opened")


def stored(influxd: Any, database: str, site_id: str) -> dict[datetime, dict[str, Any]]:
    series = influxd.query(f"SELECT * FROM drinking_water WHERE site_id = '{site_id}'", database, epoch="ms")
    out: dict[datetime, dict[str, Any]] = {}
    for s in series:
        for row in s["values"]:
            point = dict(zip(s["columns"], row, strict=True))
            out[datetime.fromtimestamp(point["time"] / 1000, UTC)] = point
    return out


def expected(logger: SimulatedLogger, cn: str) -> dict[datetime, Upload]:
    return {u.data_time: u for u in logger.sent if u.cn == cn}


async def test_ten_loggers_send_a_day_and_influxdb_holds_exactly_what_they_sent(
    tmp_path, mosquitto, influxd, influx_db, topic_root, collector_for
):
    registry = hj_sites_registry(tmp_path / "registry.toml", 10)
    loggers = specs()
    port = free_port()
    data = gateway_data(tmp_path, mosquitto, topic_root, registry, [], hj212={
        "listen_host": "127.0.0.1", "listen_port": port,
        "loggers": logger_entries(loggers, set_clock=False)})  # a past day: its clock is "off" by design
    (tmp_path / "gateway.toml").write_text(toml_dump(data), encoding="utf-8")
    status_port = free_port()
    config = ingest_toml(tmp_path, mosquitto, influxd, influx_db, topic_root, registry, status_port)
    collector = collector_for(mosquitto, topic_root)
    log = tmp_path / "programs.log"
    ingest = await weijian("ingest", "run", "--config", str(config), log=log)
    gateway = await weijian("gateway", "run", "--config", str(tmp_path / "gateway.toml"), log=log)
    sims = [SimulatedLogger(spec, seed=i) for i, (spec, _) in enumerate(loggers)]
    # A wrong password: refused (QnRtn=3), never stored.
    intruder = SimulatedLogger(LoggerSpec(mn=mn(0), password="000000", factors=SPREAD, recount=0))
    # Yesterday in China time, so no reading is in the future.
    start = (datetime.now(UTC) + timedelta(hours=8)).replace(hour=0, minute=0, second=0, microsecond=0) \
        - timedelta(days=1, hours=8)
    try:
        await wait_ready(status_port, ingest, log)
        await wait_listening(port, gateway, log)
        await asyncio.gather(*(s.run_span("127.0.0.1", port, start, start + timedelta(days=1)) for s in sims))
        await intruder.send_live("127.0.0.1", port, 2, every_s=0.1)
        assert intruder.refusals[3] == 2 and not intruder.acked
        want = {(f"hj-water-{i:03d}", u.data_time) for i, s in enumerate(sims)
                for u in s.sent if u.cn == loggers[i][1]}
        await collector.wait_for(lambda c: len(c.readings()) >= len(want), 60, "every upload published")
        for i, sim in enumerate(sims):
            site = f"hj-water-{i:03d}"
            want_site = expected(sim, loggers[i][1])
            for _ in range(100):
                got = await asyncio.to_thread(stored, influxd, influx_db, site)
                if len(got) >= len(want_site):
                    break
                await asyncio.sleep(0.2)
            assert set(got) == set(want_site), (site, len(got), len(want_site))
            for at, up in want_site.items():
                point = got[at]
                for code, (text, flag) in up.values.items():
                    metric = FACTORS[code]
                    assert point[metric] == float(text), (site, at, metric)
                    assert point[f"{metric}_flag"] == (None if flag == "N" else flag), (site, at, metric)
                assert point.get("resent") == (True if up.resent and sim.spec.edition is E25 else None)
                assert point["gateway_id"] == GATEWAY_ID
    finally:
        for proc in (gateway, ingest):
            if proc.returncode is None:
                proc.terminate()
        await asyncio.gather(gateway.wait(), ingest.wait())
    # Retries with the same QN and packets re-sent after a bad CRC were published once each.
    readings = collector.readings()
    keys = [(r["site_id"], r["ts"]) for r in readings]
    assert len(keys) == len(set(keys)) == len(want)
    faults = {i: s.spec.faults for i, s in enumerate(sims)}
    assert sum(1 for s in sims for _ in s.sent) < sum(s.wire_packets for s in sims)  # faults did happen
    resent = [r for r in readings if r.get("resent")]
    outage_2025 = [i for i, f in faults.items() if f.outage and sims[i].spec.edition is E25]
    assert resent and {r["site_id"] for r in resent} == {f"hj-water-{i:03d}" for i in outage_2025}
    assert gateway.returncode == 0 and ingest.returncode == 0


async def run_cli(*args: str) -> tuple[int, Any, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "weijian", "gateway", "hj212", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else None, err.decode()


async def test_host_commands_on_connection_and_from_the_operator(
    tmp_path, mosquitto, topic_root, collector_for
):
    registry = hj_sites_registry(tmp_path / "registry.toml", 2)
    port = free_port()
    slow = LoggerSpec(mn=mn(0), password="100000", edition=E25, factors=SPREAD,
                      clock_offset_s=900.0, overtime_s=2.0)  # its clock runs 15 minutes fast
    province = Upstream(free_port())  # the loggers' packets are forwarded; our commands' answers not
    await province.start()
    data = gateway_data(tmp_path, mosquitto, topic_root, registry, [], hj212={
        "listen_host": "127.0.0.1", "listen_port": port, "command_timeout_s": 2.0,
        "upstreams": [{"name": "province", "host": "127.0.0.1", "port": province.port, "timeout_s": 2}],
        "loggers": [{"mn": slow.mn, "password": slow.password, "site_id": "hj-water-000",
                     "device_id": "wq-01", "rtd_interval_s": 300, "min_interval_min": 5,
                     "overtime_s": 8, "recount": 2},
                    {"mn": mn(1), "password": "100001", "site_id": "hj-water-001", "device_id": "wq-01"}]})
    config = tmp_path / "gateway.toml"
    config.write_text(toml_dump(data), encoding="utf-8")
    logger = SimulatedLogger(slow)
    collector = collector_for(mosquitto, topic_root)
    async with running_gateway(data):
        await asyncio.sleep(0.3)
        live = asyncio.create_task(logger.send_live("127.0.0.1", port, 8, every_s=0.5))
        for _ in range(100):  # what its configuration asks for, on its first packet
            if len(logger.commands) >= 4:
                break
            await asyncio.sleep(0.05)
        assert [cn for cn, _ in logger.commands] == ["1012", "1062", "1064", "1000"]
        assert abs(logger.clock_offset_s) < 5  # 1012 set its clock
        settings = (logger.rtd_interval_s, logger.min_interval_min, logger.overtime_s, logger.recount)
        assert settings == (300, 5, 8, 2)
        # An operator reads the clock and sets the interval, through the control socket.
        code, answer, _ = await run_cli("send", "--config", str(config), slow.mn, "get-clock")
        assert code == 0 and answer["qn_rtn"] == 1 and answer["exe_rtn"] == 1
        told = hj212.parse_time(answer["data"]["SystemTime"])
        assert abs((told - datetime.now(UTC)).total_seconds()) < 10
        code, answer, _ = await run_cli("send", "--config", str(config), slow.mn, "set-rtd-interval", "60")
        assert code == 0 and logger.rtd_interval_s == 60 and answer["cp"] == "RtdInterval=60"
        code, status, _ = await run_cli("status", "--config", str(config))
        connected = {entry["mn"]: entry["connected"] for entry in status["loggers"]}
        assert code == 0 and connected == {slow.mn: True, mn(1): False}
        # Not connected, and not configured: the operator is told, with the exit code.
        code, answer, _ = await run_cli("send", "--config", str(config), mn(1), "get-clock")
        assert code == 1 and "not connected" in answer["error"]
        code, _, err = await run_cli("send", "--config", str(config), "FFFF", "get-clock")
        assert code == 2 and "FFFF" in err
        code, _, err = await run_cli("send", "--config", str(config), slow.mn, "set-rtd-interval", "soon")
        assert code == 2 and "RtdInterval" in err
        await live
        await collector.wait_for(lambda c: len(c.readings()) >= 8, 10, "the eight readings")
        async with asyncio.timeout(20):
            while len(province.packets) < 8:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    await province.stop()
    forwarded = [hj212.parse_packet(p[6:-6]).cn for p in province.packets]
    assert forwarded == ["2011"] * 8, forwarded  # not the 9011 / 1011 / 9012 of our commands
    # The first packet carried the logger's fast clock; once 1012 had set it, the time was right.
    now = datetime.now(UTC)
    offsets = [(datetime.fromisoformat(r["ts"]) - now).total_seconds() for r in collector.readings()]
    assert offsets[0] > 800 and all(abs(off) < 15 for off in offsets[-5:]), offsets


async def sim_cli(*args: str) -> tuple[int, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "weijian", "sim", "hj212", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else None


async def test_weijian_sim_hj212_is_a_logger_an_installer_can_point_at_a_gateway(
    tmp_path, mosquitto, topic_root
):
    registry = hj_sites_registry(tmp_path / "registry.toml", 1)
    port = free_port()
    data = gateway_data(tmp_path, mosquitto, topic_root, registry, [], hj212={
        "listen_host": "127.0.0.1", "listen_port": port,
        "loggers": [{"mn": mn(0), "password": "100000", "site_id": "hj-water-000", "device_id": "wq-01",
                     "key": KEY.hex()}]})
    async with running_gateway(data):
        await asyncio.sleep(0.3)
        code, summary = await sim_cli("--port", str(port), "--mn", mn(0), "--password", "100000",
                                      "--edition", "2025", "--key", KEY.hex(), "--count", "3",
                                      "--every", "0.2", "--clock-offset", "-600", "--split",
                                      "--bad-crc", "0.5")
        assert code == 0 and summary["uploads"] == summary["answered_9014"] == 3
        assert summary["commands"][0]["cn"] == "1012" and abs(summary["clock_offset_s"]) < 5
        code, summary = await sim_cli("--port", str(port), "--mn", mn(0), "--password", "999999",
                                      "--count", "2", "--every", "0.1")
        assert code == 1 and summary["answered_9014"] == 0 and summary["refused"] == {"3": 2}
