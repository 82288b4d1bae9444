"""Every fault, observed by a client as it would be in the field.

TCP faults are seen through a plain pymodbus client; serial-line faults through raw bytes
on the pty slave with pyserial, checked against pymodbus's own CRC as an independent oracle.
"""

from __future__ import annotations

import asyncio
import struct
import time

import pytest
import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer.rtu import FramerRTU

from firmware_sim.events import EventKind
from firmware_sim.service import Simulation


def f32(regs: list[int]) -> float:
    return struct.unpack(">f", struct.pack(">HH", *regs))[0]


async def tcp_client(sim: Simulation, site: str, device: str, timeout_s: float = 1.0):
    ep = sim.endpoint(site, device)
    client = AsyncModbusTcpClient(ep.host, port=ep.port, timeout=timeout_s, retries=0)
    assert await client.connect()
    return client


POOL = ("yc-pool-001", "pc-01")


async def read_pool(client) -> tuple[dict[str, float], int]:
    rr = await client.read_holding_registers(0, count=7, device_id=1)
    assert not rr.isError(), rr
    r = rr.registers
    status = (await client.read_holding_registers(20, count=1, device_id=1)).registers[0]
    return {"free_chlorine": f32(r[0:2]), "ph": f32(r[4:6]), "orp": float(r[6])}, status


async def test_silent_device_times_out_then_recovers(field_faults: Simulation):
    client = await tcp_client(field_faults, *POOL, timeout_s=0.5)
    try:
        event = field_faults.inject(*POOL, EventKind.SILENT)
        started = time.monotonic()
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(0, count=2, device_id=1)
        assert time.monotonic() - started >= 0.45
        field_faults.withdraw(*POOL, event)
        await client.connect()  # pymodbus closes the socket after a timeout
        rr = await client.read_holding_registers(0, count=2, device_id=1)
        assert not rr.isError()
    finally:
        client.close()


async def test_slow_answer_arrives_after_the_delay(field_faults: Simulation):
    client = await tcp_client(field_faults, *POOL, timeout_s=3)
    try:
        field_faults.inject(*POOL, EventKind.SLOW, delay_s=0.4)
        started = time.monotonic()
        rr = await client.read_holding_registers(0, count=2, device_id=1)
        elapsed = time.monotonic() - started
        assert not rr.isError()
        assert 0.4 <= elapsed < 1.5
    finally:
        client.close()


@pytest.mark.parametrize("code", [4, 6])
async def test_exception_fault_returns_the_exception_code(field_faults: Simulation, code: int):
    client = await tcp_client(field_faults, *POOL)
    try:
        field_faults.inject(*POOL, EventKind.EXCEPTION, code=code, for_s=600)
        rr = await client.read_holding_registers(0, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == code
        field_faults.clock.advance(601)
        rr = await client.read_holding_registers(0, count=2, device_id=1)
        assert not rr.isError()
    finally:
        client.close()


async def test_stuck_sensor_repeats_one_value_while_the_truth_moves(field_faults: Simulation):
    client = await tcp_client(field_faults, *POOL)
    try:
        field_faults.inject(*POOL, EventKind.STUCK, metric="ph")
        seen_ph, seen_fc, truth_ph = set(), set(), set()
        for _ in range(6):
            values, _ = await read_pool(client)
            seen_ph.add(values["ph"])
            seen_fc.add(values["free_chlorine"])
            truth_ph.add(field_faults.values(*POOL).true_values["ph"])
            field_faults.clock.advance(1800)
    finally:
        client.close()
    assert len(seen_ph) == 1
    assert len(truth_ph) == 6 and len(seen_fc) == 6


async def test_spike_and_drift_offset_the_reported_value(field_faults: Simulation):
    client = await tcp_client(field_faults, *POOL)
    try:
        truth = field_faults.values(*POOL).true_values
        spike = field_faults.inject(*POOL, EventKind.SPIKE, metric="orp", magnitude=250.0)
        values, _ = await read_pool(client)
        assert values["orp"] == pytest.approx(truth["orp"] + 250, abs=0.51)
        field_faults.withdraw(*POOL, spike)
        field_faults.inject(*POOL, EventKind.DRIFT, metric="free_chlorine", rate_per_h=0.1)
        field_faults.clock.advance(4 * 3600)
        values, _ = await read_pool(client)
        truth = field_faults.values(*POOL).true_values
        assert values["free_chlorine"] == pytest.approx(truth["free_chlorine"] + 0.4, abs=1e-4)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("kind", "bit"),
    [(EventKind.SENSOR_FAULT, 0), (EventKind.MAINTENANCE, 1), (EventKind.CALIBRATION, 2)],
)
async def test_status_register_bits(field_faults: Simulation, kind: EventKind, bit: int):
    client = await tcp_client(field_faults, *POOL)
    try:
        _, status = await read_pool(client)
        assert status == 0
        field_faults.inject(*POOL, kind)
        _, status = await read_pool(client)
        assert status == 1 << bit
    finally:
        client.close()


async def test_over_range_value_is_clamped_and_flagged(field_faults: Simulation):
    client = await tcp_client(field_faults, *POOL)
    try:
        field_faults.inject(*POOL, EventKind.SPIKE, metric="free_chlorine", magnitude=50.0)
        values, status = await read_pool(client)
        assert values["free_chlorine"] == 10.0  # the pool controller's upper range limit
        assert status == 1 << 3
    finally:
        client.close()


async def test_scheduled_events_fire_at_their_simulated_time(field_faults: Simulation):
    # field-faults: pool exception code 6 from 14:00 to 14:30
    client = await tcp_client(field_faults, *POOL)
    try:
        field_faults.clock.set_elapsed(13.9 * 3600)
        assert not (await client.read_holding_registers(0, count=2, device_id=1)).isError()
        field_faults.clock.set_elapsed(14.1 * 3600)
        rr = await client.read_holding_registers(0, count=2, device_id=1)
        assert rr.isError() and rr.exception_code == 6
    finally:
        client.close()


# --- serial line, raw bytes ----------------------------------------------------------------


def rtu_request(unit: int, fc: int, address: int, count: int) -> bytes:
    body = struct.pack(">BBHH", unit, fc, address, count)
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


def crc_ok(frame: bytes) -> bool:
    return FramerRTU.compute_CRC(frame[:-2]).to_bytes(2, "big") == frame[-2:]


def exchange(path: str, request: bytes, expect: int, timeout: float = 0.5) -> bytes:
    with serial.Serial(path, 9600, timeout=timeout) as port:
        port.reset_input_buffer()
        port.write(request)
        return port.read(expect)


async def raw(path: str, request: bytes, expect: int, wait_s: float = 0.5) -> bytes:
    return await asyncio.to_thread(exchange, path, request, expect, wait_s)


WQ1 = ("yc-water-001", "wq-01")  # unit 1 on plant-rs485
WQ2 = ("yc-water-002", "wq-01")  # unit 2 on plant-rs485


async def test_rtu_answers_good_frames_and_ignores_bad_crc_and_absent_units(
    field_faults: Simulation,
):
    path = field_faults.endpoint(*WQ1).serial_path
    good = await raw(path, rtu_request(1, 4, 0, 2), 9)
    assert len(good) == 9 and good[:3] == bytes((1, 4, 4)) and crc_ok(good)
    corrupted = bytearray(rtu_request(1, 4, 0, 2))
    corrupted[-1] ^= 0xFF
    assert await raw(path, bytes(corrupted), 9) == b""
    assert await raw(path, rtu_request(7, 4, 0, 2), 9) == b""  # nobody at unit 7
    assert await raw(path, rtu_request(0, 4, 0, 2), 9) == b""  # broadcasts get no answer
    assert field_faults.lines["plant-rs485"].crc_errors == 1
    again = await raw(path, rtu_request(2, 3, 0, 2), 9)
    assert crc_ok(again) and again[0] == 2


async def test_rtu_bad_crc_fault_sends_a_frame_whose_crc_fails(field_faults: Simulation):
    path = field_faults.endpoint(*WQ2).serial_path
    field_faults.inject(*WQ2, EventKind.BAD_CRC)
    frame = await raw(path, rtu_request(2, 3, 0, 2), 9)
    assert len(frame) == 9 and frame[:3] == bytes((2, 3, 4))
    assert not crc_ok(frame)
    # unit 1 on the same line is unaffected
    assert crc_ok(await raw(path, rtu_request(1, 4, 0, 2), 9))


async def test_rtu_garbled_fault_corrupts_the_answer(field_faults: Simulation):
    path = field_faults.endpoint(*WQ1).serial_path
    clean = await raw(path, rtu_request(1, 4, 0, 6), 17)
    field_faults.inject(*WQ1, EventKind.GARBLED)
    garbled = await raw(path, rtu_request(1, 4, 0, 6), 17)
    assert len(garbled) == 17 and garbled != clean and not crc_ok(garbled)


async def test_rtu_silent_unit_and_pymodbus_sees_timeout_and_exception(field_faults: Simulation):
    ep = field_faults.endpoint(*WQ1)
    field_faults.inject(*WQ1, EventKind.SILENT)
    field_faults.inject(*WQ2, EventKind.EXCEPTION, code=4)
    client = AsyncModbusSerialClient(ep.serial_path, baudrate=9600, timeout=0.5, retries=0)
    assert await client.connect()
    try:
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=2, device_id=1)
        await client.connect()
        rr = await client.read_holding_registers(0, count=2, device_id=2)
        assert rr.isError() and rr.exception_code == 4
    finally:
        client.close()


async def test_pymodbus_serial_client_reports_bad_crc_as_no_valid_answer(
    field_faults: Simulation,
):
    ep = field_faults.endpoint(*WQ2)
    field_faults.inject(*WQ2, EventKind.BAD_CRC)
    client = AsyncModbusSerialClient(ep.serial_path, baudrate=9600, timeout=0.5, retries=0)
    assert await client.connect()
    try:
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(0, count=2, device_id=2)
    finally:
        client.close()


async def test_serial_line_faults_are_refused_for_tcp_devices(field_faults: Simulation):
    with pytest.raises(ValueError, match="serial-line fault"):
        field_faults.inject(*POOL, EventKind.BAD_CRC)
    with pytest.raises(ValueError, match="missing"):
        field_faults.inject(*POOL, EventKind.SLOW)
