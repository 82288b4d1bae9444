"""Pure decoding: what to read from an instrument, and registers to metric values and flags.

No I/O here. :func:`plan_device` picks the blocks a poll reads (the metrics the registry
lists, the status register, and the clock when readings take the device's time);
:func:`decode_sample` turns the words read into values, each with its HJ 212 flag.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from weijian.contract import CATALOGUE, Flag, Kind, MetricValue
from weijian.device_profile import (
    DataType,
    DeviceProfile,
    ReadBlock,
    RegisterSpec,
    StatusBit,
    Table,
    WordOrder,
    plan_reads,
)

__all__ = [
    "DecodedSample",
    "decode_sample",
    "failed_metrics",
    "plan_device",
    "status_flag",
    "to_metric_values",
]

# When several status bits are set, the most serious one names the flag.
_PRECEDENCE: Final = (
    StatusBit.SENSOR_FAULT,
    StatusBit.CALIBRATION,
    StatusBit.MAINTENANCE,
    StatusBit.OVER_RANGE,
)


@dataclass(frozen=True, slots=True)
class DecodedSample:
    """One poll's decoded content.

    Attributes:
        values: metric -> physical value, rounded to the register's resolution; None for an
            implausible value.
        flags: metric -> HJ 212 flag (``N`` unless the status register says otherwise; ``D``
            for an implausible value).
        device_ts: the instrument's clock (unix seconds), if it was read.
        implausible: metric -> the decoded value outside the profile's ``min``/``max``/
            ``resolution`` (or not finite), for the log.
    """

    values: Mapping[str, float | None]
    flags: Mapping[str, Flag]
    device_ts: float | None
    implausible: Mapping[str, float] = field(default_factory=dict)


def plan_device(
    profile: DeviceProfile, metrics: Iterable[str], *, read_clock: bool
) -> list[ReadBlock]:
    """The merged read requests for one poll of a device.

    Args:
        profile: the instrument's register map.
        metrics: the metrics to read (every one must be in the profile).
        read_clock: also read the clock block (for ``timestamp = "device"``).

    Returns:
        Blocks from :func:`weijian.device_profile.plan_reads`.

    Raises:
        KeyError: a metric the profile does not map.
    """
    wanted = {f"registers.{m}" for m in metrics}
    missing = [m for m in metrics if m not in profile.registers]
    if missing:
        raise KeyError(f"profile {profile.model!r} does not map {', '.join(missing)}")
    fields = [
        f
        for f in profile.fields()
        if f[0] in wanted or f[0] == "status" or (read_clock and f[0] == "clock")
    ]
    return plan_reads(fields)


def _words_to_int(words: list[int], order: WordOrder) -> int:
    high, low = (words[0], words[1]) if order is WordOrder.ABCD else (words[1], words[0])
    return (high << 16) | low


def _decimals(x: float) -> int:
    exponent = Decimal(repr(x)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _decode_value(spec: RegisterSpec, words: list[int]) -> float:
    if spec.type is DataType.BIT or spec.type is DataType.UINT16:
        raw: float = words[0]
    elif spec.type is DataType.INT16:
        raw = words[0] - 0x10000 if words[0] & 0x8000 else words[0]
    else:
        n = _words_to_int(words, spec.word_order)
        if spec.type is DataType.UINT32:
            raw = n
        elif spec.type is DataType.INT32:
            raw = n - 0x1_0000_0000 if n & 0x8000_0000 else n
        else:  # float32: keep the 7 significant digits single precision carries
            raw = float(f"{struct.unpack('>f', n.to_bytes(4, 'big'))[0]:.7g}")
            return raw * spec.scale + spec.offset if (spec.scale, spec.offset) != (1.0, 0.0) else raw
    value = raw * spec.scale + spec.offset
    # 1234 * 0.001 is 1.2340000000000002 in binary floating point; the register holds 1.234.
    return round(value, max(_decimals(spec.scale), _decimals(spec.offset)))


def status_flag(profile: DeviceProfile, word: int) -> set[StatusBit]:
    """The status bits set in the status register ``word``."""
    if profile.status is None:
        return set()
    return {bit for bit, n in profile.status.bits.items() if word >> n & 1}


def decode_sample(
    profile: DeviceProfile,
    metrics: Iterable[str],
    data: Mapping[Table, Mapping[int, int]],
) -> DecodedSample:
    """Decode one poll.

    Args:
        profile: the instrument's register map.
        metrics: the metrics that were read.
        data: table -> address -> register word (or bit, 0/1) as read.

    Returns:
        Values and flags per metric, and the device clock if it was read.

    Raises:
        KeyError: an address the poll should have read is missing from ``data``.
    """
    values: dict[str, float] = {}
    for metric in metrics:
        spec = profile.registers[metric]
        table = data[spec.table]
        values[metric] = _decode_value(
            spec, [table[a] for a in range(spec.address, spec.address + spec.width)]
        )
    bits: set[StatusBit] = set()
    if profile.status is not None and profile.status.address in data.get(profile.status.table, {}):
        bits = status_flag(profile, data[profile.status.table][profile.status.address])
    device_flag = next((b.flag for b in _PRECEDENCE if b in bits and b is not StatusBit.OVER_RANGE), None)
    flags: dict[str, Flag] = {}
    implausible: dict[str, float] = {}
    for metric, value in values.items():
        spec = profile.registers[metric]
        if not spec.plausible(value):
            implausible[metric] = value
            flags[metric] = Flag.DEVICE_FAULT
        elif device_flag is not None:
            flags[metric] = device_flag
        elif StatusBit.OVER_RANGE in bits and spec.max is not None and value >= spec.max:
            # The instrument clamps an over-range value to its limit and raises one bit for
            # the whole device; the metric sitting at its limit is the one out of range.
            flags[metric] = Flag.OVER_RANGE
        else:
            flags[metric] = Flag.NORMAL
    device_ts: float | None = None
    if profile.clock is not None and profile.clock.address in data.get(Table.HOLDING, {}):
        holding = data[Table.HOLDING]
        a = profile.clock.address
        device_ts = float(_words_to_int([holding[a], holding[a + 1]], profile.clock.word_order))
    published: dict[str, float | None] = dict(values)
    published.update(dict.fromkeys(implausible))
    return DecodedSample(published, flags, device_ts, implausible)


def to_metric_values(kind: Kind, sample: DecodedSample) -> dict[str, MetricValue]:
    """Contract metric values (with the catalogue's units) for a decoded sample."""
    units = CATALOGUE[kind]
    return {
        m: MetricValue(value=v, unit=units[m], flag=sample.flags[m]) for m, v in sample.values.items()
    }


def failed_metrics(kind: Kind, metrics: Iterable[str], flag: Flag) -> dict[str, MetricValue]:
    """Null values with ``flag`` (``B`` or ``D``): the poll failed, the gap stays visible."""
    units = CATALOGUE[kind]
    return {m: MetricValue(value=None, unit=units[m], flag=flag) for m in metrics}
