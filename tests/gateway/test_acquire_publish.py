"""Acceptance: every kind over Modbus TCP and RTU (pty), read and published per the contract."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware_sim.scenario import load_scenario
from firmware_sim.service import run_scenario
from tests.gateway.conftest import GATEWAY_ID, device_config, gateway_data, running_gateway, write_scenario
from weijian.contract import Flag, Reading, decode_reading
from weijian.device_profile import DataType, load_profile

TCP = [
    ("yc-water-001", "wq-01", "wq-analyser"),
    ("yc-pool-001", "pc-01", "pool-controller"),
    ("yc-mw-001", "th-01", "waste-store-logger"),
    ("yc-cc-001", "fr-01", "fridge-logger"),
]
RTU = [
    ("yc-water-002", "wq-01", "wq-analyser"),
    ("dj-pool-001", "pc-01", "pool-controller"),
    ("dj-mw-001", "th-01", "waste-store-logger"),
    ("dj-cc-001", "fr-01", "fridge-logger"),
]


def every_kind_scenario(tmp_path: Path) -> Path:
    devices = [{"site_id": s, "device_id": d, "profile": p} for s, d, p in TCP]
    devices += [
        {"site_id": s, "device_id": d, "profile": p, "transport": "rtu", "line": "plant-485", "unit_id": i}
        for i, (s, d, p) in enumerate(RTU, start=1)
    ]
    return write_scenario(tmp_path / "every-kind.toml", devices, lines=("plant-485",))


def resolution(profile: str, metric: str) -> float:
    spec = load_profile(profile).registers[metric]
    return 5e-7 * 10 if spec.type is DataType.FLOAT32 else abs(spec.scale) / 2 + 1e-9


async def test_every_kind_over_tcp_and_rtu_is_published_with_the_simulators_values(
    tmp_path, mosquitto, topic_root, gw_registry, collector_for
):
    async with run_scenario(load_scenario(every_kind_scenario(tmp_path)), speed=0) as sim:
        devices = [device_config(ep, timestamp="device") for ep in sim.endpoints]
        collector = collector_for(mosquitto, topic_root)
        data = gateway_data(tmp_path, mosquitto, topic_root, gw_registry, devices)
        async with running_gateway(data):
            await collector.wait_for(
                lambda c: {(r["site_id"], r["device_id"]) for r in c.readings()} >= {
                    (s, d) for s, d, _ in TCP + RTU
                },
                15,
                "a reading from each of the 8 devices",
            )
            await collector.wait_for(
                lambda c: any(s["state"] == "online" and s["devices_online"] == 8 for s in c.statuses()),
                5,
                "a status with 8 devices online",
            )
        messages = list(collector.messages)
    seen_transport = set()
    for message in messages:
        if not message.topic.endswith("/reading"):
            continue
        reading = decode_reading(message.topic, message.payload, now=datetime.now(UTC), root=topic_root)
        assert isinstance(reading, Reading), reading
        assert reading.gateway_id == GATEWAY_ID
        state = sim.values(reading.site_id, reading.device_id)
        ep = sim.endpoint(reading.site_id, reading.device_id)
        assert reading.ts == datetime.fromtimestamp(state.t, UTC)  # the device's clock
        assert set(reading.metrics) == set(
            load_profile(ep.profile).registers
        ) - {"total_chlorine"}  # the registry lists what each device measures
        for metric, mv in reading.metrics.items():
            assert mv.flag is Flag.NORMAL, (ep.key, metric)
            assert mv.value == pytest.approx(state.reported[metric], abs=resolution(ep.profile, metric)), (
                ep.key,
                metric,
            )
        seen_transport.add((ep.transport.value, reading.kind.value))
    assert len(seen_transport) == 8  # 4 kinds x 2 transports
    seqs = [m.json()["seq"] for m in messages if m.topic.endswith("/reading")]
    assert len(seqs) == len(set(seqs))
    final = collector.statuses()[-1]
    assert final["state"] == "offline"  # a clean stop publishes offline itself
