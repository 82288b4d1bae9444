"""Acceptance: read every simulated device with a plain pymodbus client, decode by hand.

The register maps below are transcribed from the datasheet in docs/firmware_sim.md, not
taken from weijian.device_profile, so a mistake in a profile file shows up here instead of
hiding on both sides.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from firmware_sim.scenario import Transport
from firmware_sim.service import Simulation

# metric -> (function code, address, type, scale, offset)
DATASHEET: dict[str, dict[str, tuple[int, int, str, float, float]]] = {
    "wq-analyser": {
        "free_chlorine": (4, 0, "u16", 0.001, 0.0),
        "total_chlorine": (4, 1, "u16", 0.001, 0.0),
        "turbidity": (4, 2, "u16", 0.001, 0.0),
        "ph": (4, 3, "u16", 0.01, 0.0),
        "temperature": (4, 4, "i16", 0.1, 0.0),
        "conductivity": (4, 5, "u32abcd", 0.1, 0.0),
    },
    "wq-analyser-cdab": {
        "free_chlorine": (3, 0, "f32cdab", 1.0, 0.0),
        "turbidity": (3, 2, "f32cdab", 1.0, 0.0),
        "ph": (3, 4, "f32cdab", 1.0, 0.0),
        "temperature": (3, 6, "f32cdab", 1.0, 0.0),
        "conductivity": (3, 8, "f32cdab", 1.0, 0.0),
    },
    "pool-controller": {
        "free_chlorine": (3, 0, "f32abcd", 1.0, 0.0),
        "combined_chlorine": (3, 2, "f32abcd", 1.0, 0.0),
        "ph": (3, 4, "f32abcd", 1.0, 0.0),
        "orp": (3, 6, "i16", 1.0, 0.0),
        "temperature": (3, 8, "i32cdab", 0.01, 0.0),
    },
    "waste-store-logger": {
        "temperature": (4, 0, "u16", 0.1, -40.0),
        "humidity": (4, 1, "u16", 0.1, 0.0),
        "weight": (4, 2, "u32cdab", 0.01, 0.0),
        "door_open": (2, 0, "bit", 1.0, 0.0),
    },
    "fridge-logger": {
        "temperature": (4, 0, "i16", 0.1, 0.0),
        "door_open": (1, 0, "bit", 1.0, 0.0),
        "power_ok": (2, 0, "bit", 1.0, 0.0),
    },
}
# profile -> (function code, address of the status register, sensor-fault bit)
STATUS = {
    "wq-analyser": (4, 16, 0),
    "wq-analyser-cdab": (3, 20, 4),
    "pool-controller": (3, 20, 0),
    "waste-store-logger": (4, 8, 0),
    "fridge-logger": (4, 1, 0),
}
# profile -> (holding address, word order) of the uint32 unix-seconds clock
CLOCK = {
    "wq-analyser": (100, "abcd"),
    "wq-analyser-cdab": (30, "cdab"),
    "pool-controller": (40, "abcd"),
    "waste-store-logger": (50, "abcd"),
    "fridge-logger": (0, "abcd"),
}


def decode(kind: str, regs: list[int]) -> float:
    if kind == "u16":
        return float(regs[0])
    if kind == "i16":
        return float(struct.unpack(">h", struct.pack(">H", regs[0]))[0])
    words = regs[:2] if kind.endswith("abcd") else [regs[1], regs[0]]
    raw = struct.pack(">HH", *words)
    fmt = {"u32": ">I", "i32": ">i", "f32": ">f"}[kind[:3]]
    return float(struct.unpack(fmt, raw)[0])


async def read_raw(client, fc: int, address: int, count: int, unit: int) -> list[int]:
    call = {
        1: client.read_coils,
        2: client.read_discrete_inputs,
        3: client.read_holding_registers,
        4: client.read_input_registers,
    }[fc]
    rr = await call(address, count=count, device_id=unit)
    assert not rr.isError(), f"fc {fc} @ {address}: {rr}"
    return [int(b) for b in rr.bits[:count]] if fc in (1, 2) else list(rr.registers)


async def read_by_hand(client, profile: str, unit: int) -> tuple[dict[str, float], int, int]:
    values = {}
    for metric, (fc, address, kind, scale, offset) in DATASHEET[profile].items():
        width = 2 if kind[1:3] == "32" else 1
        regs = await read_raw(client, fc, address, width, unit)
        values[metric] = regs[0] if kind == "bit" else decode(kind, regs) * scale + offset
    fc, address, _ = STATUS[profile]
    (status,) = await read_raw(client, fc, address, 1, unit)
    clock_address, order = CLOCK[profile]
    clock = int(decode(f"u32{order}", await read_raw(client, 3, clock_address, 2, unit)))
    return values, status, clock


def tolerance(profile: str, metric: str) -> float:
    _, _, kind, scale, _ = DATASHEET[profile][metric]
    return 1e-4 * 5 if kind.startswith("f32") else scale / 2 + 1e-9


async def test_every_device_of_a_normal_day_reads_back_its_true_values(normal_day: Simulation):
    seen_profiles = set()
    for ep in normal_day.endpoints:
        if ep.transport is Transport.TCP:
            client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=2, retries=0)
        else:
            client = AsyncModbusSerialClient(ep.serial_path, baudrate=9600, timeout=2, retries=0)
        assert await client.connect(), ep.describe()
        try:
            values, status, clock = await read_by_hand(client, ep.profile, ep.unit_id)
        finally:
            client.close()
        state = normal_day.values(ep.site_id, ep.device_id)
        assert state.reported == state.true_values  # no faults in a normal day
        for metric, got in values.items():
            want = state.true_values[metric]
            assert got == pytest.approx(want, abs=tolerance(ep.profile, metric), rel=1e-6), (
                ep.key,
                metric,
            )
        assert status == 0, ep.key
        assert clock == int(state.t), ep.key
        seen_profiles.add(ep.profile)
    assert seen_profiles == {"wq-analyser", "pool-controller", "waste-store-logger", "fridge-logger"}


async def test_cdab_float_profile_and_two_units_on_one_rs485_line(field_faults: Simulation):
    # yc-water-001 (wq-analyser, unit 1) and yc-water-002 (wq-analyser-cdab, unit 2) share a line
    ep1 = field_faults.endpoint("yc-water-001", "wq-01")
    ep2 = field_faults.endpoint("yc-water-002", "wq-01")
    assert ep1.serial_path == ep2.serial_path
    client = AsyncModbusSerialClient(ep1.serial_path, baudrate=9600, timeout=2, retries=0)
    assert await client.connect()
    try:
        for ep in (ep1, ep2):
            values, status, _ = await read_by_hand(client, ep.profile, ep.unit_id)
            truth = field_faults.values(ep.site_id, ep.device_id).true_values
            for metric, got in values.items():
                assert got == pytest.approx(truth[metric], abs=tolerance(ep.profile, metric)), (
                    ep.key,
                    metric,
                )
            assert status == 0
    finally:
        client.close()


async def test_values_move_with_the_simulated_clock(normal_day: Simulation):
    ep = normal_day.endpoint("yc-pool-001", "pc-01")
    client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=2, retries=0)
    await client.connect()
    try:
        before, _, clock_before = await read_by_hand(client, ep.profile, ep.unit_id)
        normal_day.clock.advance(3 * 3600)  # 15:00 -> 18:00
        after, _, clock_after = await read_by_hand(client, ep.profile, ep.unit_id)
    finally:
        client.close()
    assert clock_after - clock_before == 3 * 3600
    assert before != after


async def test_reads_outside_the_map_get_exception_2_and_writes_exception_1(
    normal_day: Simulation,
):
    ep = normal_day.endpoint("yc-water-001", "wq-01")
    client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=2, retries=0)
    await client.connect()
    try:
        rr = await client.read_input_registers(5, count=5, device_id=1)  # runs past address 6
        assert rr.isError() and rr.exception_code == 2
        rr = await client.write_register(100, 1, device_id=1)
        assert rr.isError() and rr.exception_code == 1
        rr = await client.read_input_registers(0, count=1, device_id=9)  # not hosted here
        assert rr.isError() and rr.exception_code == 0x0B
    finally:
        client.close()


async def test_many_clients_at_once_are_all_answered(normal_day: Simulation):
    tcp = [ep for ep in normal_day.endpoints if ep.transport is Transport.TCP]

    async def poll(ep) -> int:
        client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=2, retries=0)
        await client.connect()
        try:
            for _ in range(20):
                await read_by_hand(client, ep.profile, ep.unit_id)
        finally:
            client.close()
        return 20

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(poll(ep), name=f"poll-{ep.key}") for ep in tcp]
    assert sum(t.result() for t in tasks) == 20 * len(tcp)
