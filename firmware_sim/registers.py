"""Encoding physical values into an instrument's register image, as its profile says.

The inverse of what a gateway does: ``raw = (value - offset) / scale``, packed as the
profile's data type in its word order. Values above the instrument's range (the profile's
``max``, or what the data type can hold) are clamped and raise the over-range status bit,
as real instruments do.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from weijian.device_profile import DataType, DeviceProfile, RegisterSpec, StatusBit, Table, WordOrder

__all__ = ["RegisterImage", "build_image", "encode_value", "split_words"]

_INT_RANGE = {
    DataType.UINT16: (0, 0xFFFF),
    DataType.INT16: (-0x8000, 0x7FFF),
    DataType.UINT32: (0, 0xFFFFFFFF),
    DataType.INT32: (-0x80000000, 0x7FFFFFFF),
}


def split_words(value32: int, order: WordOrder) -> list[int]:
    """Split an unsigned 32-bit integer into two registers in ``order``."""
    high, low = (value32 >> 16) & 0xFFFF, value32 & 0xFFFF
    return [high, low] if order is WordOrder.ABCD else [low, high]


def encode_value(spec: RegisterSpec, value: float) -> tuple[list[int], bool]:
    """Encode one physical value.

    Returns:
        The register words (or ``[0]``/``[1]`` for a bit) and whether it was over range.
    """
    if spec.type is DataType.BIT:
        return [1 if value >= 0.5 else 0], False
    over = False
    if spec.max is not None and value > spec.max:
        value, over = spec.max, True
    if spec.min is not None and value < spec.min:
        value = spec.min  # instruments clamp at their lower limit too (no status bit for it)
    raw = (value - spec.offset) / spec.scale
    if spec.type is DataType.FLOAT32:
        (bits,) = struct.unpack(">I", struct.pack(">f", raw))
        return split_words(bits, spec.word_order), over
    low, high = _INT_RANGE[spec.type]
    n = round(raw) if math.isfinite(raw) else high
    if n > high:
        n, over = high, True
    n = max(n, low)
    if spec.type is DataType.INT16:
        return [n & 0xFFFF], over
    if spec.type is DataType.UINT16:
        return [n], over
    return split_words(n & 0xFFFFFFFF, spec.word_order), over


@dataclass(slots=True)
class RegisterImage:
    """The content of the four tables at one instant; unmapped addresses are absent."""

    tables: dict[Table, dict[int, int]] = field(default_factory=lambda: {table: {} for table in Table})

    def read(self, table: Table, address: int, count: int) -> list[int] | None:
        """The values at ``address .. address + count - 1``, or None if any is unmapped."""
        cells = self.tables[table]
        try:
            return [cells[a] for a in range(address, address + count)]
        except KeyError:
            return None


def build_image(
    profile: DeviceProfile,
    values: Mapping[str, float],
    status_bits: set[StatusBit],
    clock_s: float | None,
) -> RegisterImage:
    """Lay out reported values, status bits and the clock as ``profile`` maps them.

    Args:
        profile: the instrument's register map.
        values: reported value per metric; a metric without a value reads 0.
        status_bits: bits to raise (over-range is added here when a value is clamped).
        clock_s: the instrument clock (unix seconds), if the profile has one.
    """
    image = RegisterImage()
    bits = set(status_bits)
    for metric, spec in profile.registers.items():
        words, over = encode_value(spec, values.get(metric, 0.0))
        if over:
            bits.add(StatusBit.OVER_RANGE)
        cells = image.tables[spec.table]
        for i, word in enumerate(words):
            cells[spec.address + i] = word
    if profile.status is not None:
        word = 0
        for meaning, bit in profile.status.bits.items():
            if meaning in bits:
                word |= 1 << bit
        image.tables[profile.status.table][profile.status.address] = word
    if profile.clock is not None and clock_s is not None:
        words = split_words(int(clock_s) & 0xFFFFFFFF, profile.clock.word_order)
        image.tables[Table.HOLDING][profile.clock.address] = words[0]
        image.tables[Table.HOLDING][profile.clock.address + 1] = words[1]
    return image
