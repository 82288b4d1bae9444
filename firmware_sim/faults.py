"""Sensor and communication faults: how an instrument misreports and misbehaves.

Pure functions over the device's event list. Sensor faults turn the true values into the
reported ones and raise status bits; communication faults are summarised into a
:class:`WireBehaviour` the transports obey.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from firmware_sim.events import Event, EventKind
from weijian.device_profile import StatusBit

__all__ = ["DEFAULT_EXCEPTION_CODE", "WireBehaviour", "apply_sensor_faults", "wire_behaviour"]

# Modbus exception 04, server device failure: what instruments answer when a sensor board
# or an internal bus is down.
DEFAULT_EXCEPTION_CODE = 4

_STATUS_OF = {
    EventKind.SENSOR_FAULT: StatusBit.SENSOR_FAULT,
    EventKind.MAINTENANCE: StatusBit.MAINTENANCE,
    EventKind.CALIBRATION: StatusBit.CALIBRATION,
}


def apply_sensor_faults(
    true_values: Mapping[str, float],
    events: Sequence[Event],
    t: float,
    sample_at: Callable[[float], Mapping[str, float]],
) -> tuple[dict[str, float], set[StatusBit]]:
    """Return the values the instrument reports and the status bits it raises at ``t``.

    Args:
        true_values: the physical values at ``t``.
        events: every event of the device (inactive ones are ignored).
        t: simulated time.
        sample_at: the true values at another time (a stuck sensor repeats the value it had
            when it stuck).

    Returns:
        The reported values and the set of status bits to raise.
    """
    reported = dict(true_values)
    bits: set[StatusBit] = set()
    for e in events:
        if not e.is_active(t):
            continue
        if e.kind in _STATUS_OF:
            bits.add(_STATUS_OF[e.kind])
            continue
        targets = [e.metric] if e.metric is not None else list(reported)
        if e.kind is EventKind.STUCK:
            frozen = sample_at(e.start_s)
            for m in targets:
                reported[m] = frozen[m]
        elif e.kind is EventKind.SPIKE:
            for m in targets:
                reported[m] += e.param("magnitude", 0.0)
        elif e.kind is EventKind.DRIFT:
            hours = (t - e.start_s) / 3600
            for m in targets:
                reported[m] += e.param("rate_per_h", 0.0) * hours
    return reported, bits


@dataclass(frozen=True, slots=True)
class WireBehaviour:
    """How the device answers right now.

    Attributes:
        silent: do not answer at all.
        delay_s: wall-clock seconds to wait before answering.
        exception_code: answer every request with this Modbus exception instead.
        garbled: (RTU) scramble the answer's bytes.
        bad_crc: (RTU) send the answer with a wrong CRC.
    """

    silent: bool = False
    delay_s: float = 0.0
    exception_code: int | None = None
    garbled: bool = False
    bad_crc: bool = False


NORMAL = WireBehaviour()


def wire_behaviour(events: Sequence[Event], t: float) -> WireBehaviour:
    """Summarise the communication faults in force at ``t``."""
    silent = garbled = bad_crc = False
    delay = 0.0
    code: int | None = None
    for e in events:
        if not e.is_active(t):
            continue
        if e.kind is EventKind.SILENT:
            silent = True
        elif e.kind is EventKind.SLOW:
            delay = max(delay, e.param("delay_s", 0.0))
        elif e.kind is EventKind.EXCEPTION:
            code = int(e.param("code", DEFAULT_EXCEPTION_CODE))
        elif e.kind is EventKind.GARBLED:
            garbled = True
        elif e.kind is EventKind.BAD_CRC:
            bad_crc = True
    if not (silent or garbled or bad_crc or delay or code is not None):
        return NORMAL
    return WireBehaviour(silent, delay, code, garbled, bad_crc)
