"""The Modbus application layer of a simulated instrument, and RTU framing helpers.

Pure: a request PDU and a register image in, a response PDU out. Read function codes 1-4
are served; any other function code is answered with exception 01 (the instruments are
read-only loggers), a read touching an unmapped address with exception 02, a bad count
with exception 03 (Modbus application protocol v1.1b3, sections 6.1-6.4 and 7).

The transports (``tcp.py``, ``rtu.py``) wrap these PDUs in an MBAP header or an RTU frame.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

from firmware_sim.registers import RegisterImage
from weijian.crc16 import TABLE_A001
from weijian.device_profile import MAX_READ_BITS, MAX_READ_REGISTERS, Table

__all__ = ["ExceptionCode", "answer", "crc16", "exception_pdu", "rtu_frame", "rtu_request_length"]

_TABLE_OF_FC: Final = {1: Table.COIL, 2: Table.DISCRETE_INPUT, 3: Table.HOLDING, 4: Table.INPUT}


class ExceptionCode(IntEnum):
    """Modbus exception codes (application protocol, section 7)."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04
    ACKNOWLEDGE = 0x05
    SERVER_DEVICE_BUSY = 0x06
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_TARGET_FAILED = 0x0B


def exception_pdu(function_code: int, code: int) -> bytes:
    """An exception response: the function code with its high bit set, then the code."""
    return bytes(((function_code | 0x80) & 0xFF, code & 0xFF))


def answer(image: RegisterImage, pdu: bytes) -> bytes:
    """Answer one request PDU from ``image``."""
    if not pdu:
        return exception_pdu(0, ExceptionCode.ILLEGAL_FUNCTION)
    fc = pdu[0]
    table = _TABLE_OF_FC.get(fc)
    if table is None:
        return exception_pdu(fc, ExceptionCode.ILLEGAL_FUNCTION)
    if len(pdu) != 5:
        return exception_pdu(fc, ExceptionCode.ILLEGAL_DATA_VALUE)
    address, count = struct.unpack(">HH", pdu[1:5])
    limit = MAX_READ_BITS if table.is_bit else MAX_READ_REGISTERS
    if not 1 <= count <= limit:
        return exception_pdu(fc, ExceptionCode.ILLEGAL_DATA_VALUE)
    values = image.read(table, address, count)
    if values is None:
        return exception_pdu(fc, ExceptionCode.ILLEGAL_DATA_ADDRESS)
    if table.is_bit:
        packed = bytearray((count + 7) // 8)
        for i, bit in enumerate(values):
            if bit:
                packed[i // 8] |= 1 << (i % 8)
        return bytes((fc, len(packed))) + bytes(packed)
    return bytes((fc, 2 * count)) + struct.pack(f">{count}H", *values)


_CRC_TABLE: Final = TABLE_A001


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (polynomial 0xA001 reflected, initial value 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def rtu_frame(unit_id: int, pdu: bytes) -> bytes:
    """An RTU frame: unit id, PDU, then the CRC low byte first."""
    body = bytes((unit_id,)) + pdu
    return body + crc16(body).to_bytes(2, "little")


def rtu_request_length(buffer: bytes | bytearray) -> int | None:
    """Length of the request frame at the start of ``buffer``, once enough bytes are there.

    Returns:
        The frame length; 0 if more bytes are needed to tell; None if the function code is
        not one a master sends to these instruments (the receiver then waits for the line to
        fall silent and discards what it got, as RTU slaves do).
    """
    if len(buffer) < 2:
        return 0
    fc = buffer[1]
    if fc in (1, 2, 3, 4, 5, 6):
        return 8
    if fc in (15, 16):
        if len(buffer) < 7:
            return 0
        return 9 + buffer[6]
    return None
