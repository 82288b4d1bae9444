"""RS-485 lines as a field engineer meets them: 8E1 and 8N2 formats, the 3.5-character silence
between any two frames, a bad CRC recovered within that silence, and lines that the
configuration gets wrong (two ports on one line, one port on two lines)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware_sim.scenario import load_scenario
from firmware_sim.service import run_scenario
from gateway.acquire import SerialFormat
from tests.gateway.conftest import device_config, gateway_data, running_gateway, toml_dump, write_scenario
from tests.gateway.paced_line import Frame, PacedLine
from weijian.contract import Flag, Reading, decode_reading

LINES = {
    "line-8e1": (SerialFormat(9600, 8, "E", 1), [("yc-water-002", "wq-01", "wq-analyser"),
                                                 ("dj-pool-001", "pc-01", "pool-controller")]),
    "line-8n2": (SerialFormat(9600, 8, "N", 2), [("dj-mw-001", "th-01", "waste-store-logger"),
                                                 ("dj-cc-001", "fr-01", "fridge-logger")]),
}


def two_line_scenario(tmp_path: Path) -> Path:
    devices = [
        {"site_id": s, "device_id": d, "profile": p, "transport": "rtu", "line": line, "unit_id": i}
        for line, (_fmt, members) in LINES.items()
        for i, (s, d, p) in enumerate(members, start=1)
    ]
    return write_scenario(tmp_path / "two-lines.toml", devices, lines=tuple(LINES))


def one_logger_scenario(tmp_path: Path) -> Path:
    """One fridge logger alone on RS-485 line ``l1``."""
    return write_scenario(tmp_path / "one.toml", [
        {"site_id": "dj-cc-001", "device_id": "fr-01", "profile": "fridge-logger", "transport": "rtu",
         "line": "l1", "unit_id": 1},
    ], lines=("l1",))


def gaps_before_requests(frames: list[Frame]) -> list[float]:
    """Silence on the wire before each frame the gateway sent (the first excepted)."""
    return [b.start - a.end for a, b in itertools.pairwise(frames) if b.sender == "gateway"]


def rtu_devices(sim, relays: dict[str, PacedLine], **extra):  # type: ignore[no-untyped-def]
    out = []
    for ep in sim.endpoints:
        fmt = relays[ep.line].line
        out.append(device_config(ep, serial=relays[ep.line].url, baudrate=fmt.baudrate,
                                 parity=fmt.parity, stopbits=fmt.stopbits, **extra))
    return out


async def test_8e1_and_8n2_lines_read_right_with_the_silence_kept_between_every_frame(
    tmp_path, mosquitto, topic_root, gw_registry, collector_for
):
    async with run_scenario(load_scenario(two_line_scenario(tmp_path)), speed=0) as sim:
        by_line = {ep.line: ep.serial_path for ep in sim.endpoints}
        with PacedLine(by_line["line-8e1"], LINES["line-8e1"][0]) as e1, \
                PacedLine(by_line["line-8n2"], LINES["line-8n2"][0]) as n2:
            relays = {"line-8e1": e1, "line-8n2": n2}
            collector = collector_for(mosquitto, topic_root)
            # frame_gap_s = 0: the line's own 3.5 characters are the only silence asked for.
            # timestamp = "device": each poll reads two blocks, so the gap inside a device's
            # poll is on the wire too, not only the gap between devices.
            data = gateway_data(tmp_path, mosquitto, topic_root, gw_registry,
                                rtu_devices(sim, relays, timestamp="device"),
                                frame_gap_s=0.0, timeout_s=1.0, poll_interval_s=0.1)
            async with running_gateway(data):
                await collector.wait_for(
                    lambda c: all(
                        sum(1 for r in c.readings() if (r["site_id"], r["device_id"]) == (s, d)) >= 5
                        for _f, members in LINES.values() for s, d, _p in members
                    ),
                    30, "five readings from each of the four devices",
                )
            messages = list(collector.messages)
            frames = {name: relay.snapshot() for name, relay in relays.items()}
            refused = e1.refused + n2.refused
    assert not refused, refused
    for message in messages:
        if not message.topic.endswith("/reading"):
            continue
        reading = decode_reading(message.topic, message.payload, now=datetime.now(UTC), root=topic_root)
        assert isinstance(reading, Reading), reading
        state = sim.values(reading.site_id, reading.device_id)
        for metric, mv in reading.metrics.items():
            assert mv.flag is Flag.NORMAL, (reading.site_id, metric, mv)
            assert mv.value == pytest.approx(state.reported[metric], rel=1e-3, abs=0.06), metric
    for name, line_frames in frames.items():
        t35 = LINES[name][0].t35_s
        gaps = gaps_before_requests(line_frames)
        assert len(gaps) >= 30, (name, len(gaps))
        # 11 bits per character at 9600 baud in both formats: 3.5 characters = 4.01 ms.
        assert t35 == pytest.approx(3.5 * 11 / 9600)
        assert min(gaps) >= t35, (name, sorted(gaps)[:5])


async def test_after_an_answer_with_a_bad_crc_the_retry_goes_out_within_the_silence(
    tmp_path, mosquitto, topic_root, gw_registry, collector_for
):
    scenario = one_logger_scenario(tmp_path)
    fmt = SerialFormat(9600, 8, "E", 1)
    async with run_scenario(load_scenario(scenario), speed=0) as sim:
        with PacedLine(sim.endpoints[0].serial_path, fmt, corrupt={3}) as relay:
            collector = collector_for(mosquitto, topic_root)
            data = gateway_data(tmp_path, mosquitto, topic_root, gw_registry,
                                rtu_devices(sim, {"l1": relay}, retries=1),
                                frame_gap_s=0.0, timeout_s=1.0, poll_interval_s=0.2)
            async with running_gateway(data):
                await collector.wait_for(lambda c: len(c.readings()) >= 6, 20, "six readings")
            frames = relay.snapshot()
            readings = collector.readings()
    answers = [i for i, f in enumerate(frames) if f.sender == "instrument"]
    spoiled = answers[3]
    retry = frames[spoiled + 1]
    assert retry.sender == "gateway"
    assert retry.data == frames[spoiled - 1].data  # the same request again
    # The timeout is 1 s; the retry leaves after the line's silence plus scheduling slack.
    assert fmt.t35_s <= retry.start - frames[spoiled].end < 0.15
    # The retry's answer was good, so no poll lost its values.
    assert all(mv["flag"] == "N" for r in readings for mv in r["metrics"].values())


def _run_gateway_cli(tmp_path: Path, data: dict) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    config = tmp_path / "gateway.toml"
    config.write_text(toml_dump(data), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "weijian", "gateway", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=30, check=False,
    )


def _two_rtu_devices(**second: object) -> list[dict[str, object]]:
    first = {"site_id": "dj-cc-001", "device_id": "fr-01", "transport": "rtu", "serial": "/dev/ttyUSB0",
             "line": "plant", "unit_id": 1}
    return [first, {"site_id": "dj-mw-001", "device_id": "th-01", "transport": "rtu",
                    "serial": "/dev/ttyUSB0", "line": "plant", "unit_id": 2} | second]


@pytest.mark.parametrize(("second", "names"), [
    ({"serial": "/dev/ttyUSB1"}, ["'serial'", "/dev/ttyUSB1", "/dev/ttyUSB0"]),
    ({"parity": "E"}, ["'parity'", "'E'", "'N'"]),
    ({"line": "other"}, ["'line'", "/dev/ttyUSB0", "'plant'", "'other'"]),
])
def test_a_line_with_two_ports_or_formats_or_a_port_on_two_lines_exits_2_naming_both_devices(
    tmp_path, mosquitto, topic_root, gw_registry, second, names
):
    data = gateway_data(tmp_path, mosquitto, topic_root, gw_registry, _two_rtu_devices(**second))
    result = _run_gateway_cli(tmp_path, data)
    assert result.returncode == 2, result.stderr
    for needle in [*names, "gateway.devices[0]", "dj-cc-001/fr-01", "gateway.devices[1]", "dj-mw-001/th-01"]:
        assert needle in result.stderr, (needle, result.stderr)


async def test_a_gateway_set_to_8n1_on_an_8e1_line_gets_no_answers_and_says_so_in_its_readings(
    tmp_path, mosquitto, topic_root, gw_registry, collector_for
):
    scenario = one_logger_scenario(tmp_path)
    async with run_scenario(load_scenario(scenario), speed=0) as sim:
        with PacedLine(sim.endpoints[0].serial_path, SerialFormat(9600, 8, "E", 1)) as relay:
            collector = collector_for(mosquitto, topic_root)
            device = device_config(sim.endpoints[0], serial=relay.url)  # parity left at N
            data = gateway_data(tmp_path, mosquitto, topic_root, gw_registry, [device],
                                timeout_s=0.2, poll_interval_s=0.2)
            async with running_gateway(data):
                await collector.wait_for(lambda c: len(c.readings()) >= 2, 20, "two readings")
            readings = collector.readings()
    assert relay.refused and "9600 8N1" in relay.refused[0]
    assert all(mv["flag"] == "B" and mv["value"] is None for r in readings for mv in r["metrics"].values())


async def test_a_serial_port_that_cannot_be_opened_is_named_by_key_and_cause(
    tmp_path, mosquitto, topic_root, gw_registry, collector_for
):
    missing = str(tmp_path / "ttyUSB9")
    device = {"site_id": "dj-cc-001", "device_id": "fr-01", "transport": "rtu", "serial": missing,
              "line": "l1", "unit_id": 1}
    collector = collector_for(mosquitto, topic_root)
    data = gateway_data(tmp_path, mosquitto, topic_root, gw_registry, [device], timeout_s=0.2)
    async with running_gateway(data):
        await collector.wait_for(
            lambda c: any(s["devices"].get("dj-cc-001/fr-01", {}).get("last_error") for s in c.statuses()),
            10, "a status with the device's error",
        )
    error = next(s["devices"]["dj-cc-001/fr-01"]["last_error"] for s in collector.statuses()
                 if s["devices"].get("dj-cc-001/fr-01", {}).get("last_error"))
    assert "gateway.devices[0]" in error and "key 'serial'" in error and missing in error
    assert "no such device" in error
