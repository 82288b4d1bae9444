"""The table of the reflected CRC-16 polynomial 0xA001, shared by two different checksums.

Modbus RTU's CRC (``R = (R >> 8) ^ T[(R ^ b) & 0xFF]``, firmware_sim) and HJ 212's
(``R = T[(R >> 8) ^ b]``, gateway/hj212.py) index the same 256-entry table differently.
"""

from __future__ import annotations

from typing import Final

__all__ = ["TABLE_A001"]


def _table() -> tuple[int, ...]:
    out = []
    for byte in range(256):
        r = byte
        for _ in range(8):
            r = (r >> 1) ^ 0xA001 if r & 1 else r >> 1
        out.append(r)
    return tuple(out)


TABLE_A001: Final = _table()
