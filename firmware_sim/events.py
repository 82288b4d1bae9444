"""Scenario events and on-demand faults: what can happen to a simulated device, and when.

Three families, applied at three places:

* physical events change the world the signal model describes (``signals.py``);
* sensor faults change what the instrument reports about it (``faults.py``);
* communication faults change how the instrument answers on the wire (``tcp.py``, ``rtu.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from weijian.contract import Kind

__all__ = ["COMM_FAULTS", "EVENT_PARAMS", "KINDS_OF", "PHYSICAL", "SENSOR_FAULTS", "Event", "EventKind"]


class EventKind(StrEnum):
    """Everything a scenario or a test can make happen to a device."""

    # physical: the world changes
    MAINS_FAILURE = "mains_failure"  # cold chain: compressor stops, cabinet warms, power_ok 0
    DOOR_LEFT_OPEN = "door_left_open"  # cold chain, medical waste
    MISSED_COLLECTION = "missed_collection"  # medical waste: collections in the window skipped
    DOSING_FAILURE = "dosing_failure"  # water and pools: chlorine dosing stops
    TURBIDITY_EVENT = "turbidity_event"  # drinking water: a real turbidity excursion
    # sensor: the instrument misreports
    STUCK = "stuck"  # value frozen at its value when the fault began
    SPIKE = "spike"  # value offset by `magnitude` (a glitch; default one minute)
    DRIFT = "drift"  # value drifting by `rate_per_h` per hour
    SENSOR_FAULT = "sensor_fault"  # status bit: sensor fault (flag D)
    MAINTENANCE = "maintenance"  # status bit: maintenance (flag M)
    CALIBRATION = "calibration"  # status bit: calibration (flag C)
    # communication: the instrument misbehaves on the wire
    SILENT = "silent"  # no answer at all
    SLOW = "slow"  # answers after `delay_s` wall-clock seconds
    EXCEPTION = "exception"  # answers with Modbus exception `code`
    GARBLED = "garbled"  # RTU only: the answer's bytes are scrambled
    BAD_CRC = "bad_crc"  # RTU only: the answer's CRC is wrong


PHYSICAL: Final = frozenset(
    {
        EventKind.MAINS_FAILURE,
        EventKind.DOOR_LEFT_OPEN,
        EventKind.MISSED_COLLECTION,
        EventKind.DOSING_FAILURE,
        EventKind.TURBIDITY_EVENT,
    }
)
SENSOR_FAULTS: Final = frozenset(
    {
        EventKind.STUCK,
        EventKind.SPIKE,
        EventKind.DRIFT,
        EventKind.SENSOR_FAULT,
        EventKind.MAINTENANCE,
        EventKind.CALIBRATION,
    }
)
COMM_FAULTS: Final = frozenset(
    {EventKind.SILENT, EventKind.SLOW, EventKind.EXCEPTION, EventKind.GARBLED, EventKind.BAD_CRC}
)

# The kinds a physical event makes sense for; absent = every kind.
KINDS_OF: Final[Mapping[EventKind, frozenset[Kind]]] = {
    EventKind.MAINS_FAILURE: frozenset({Kind.COLD_CHAIN}),
    EventKind.DOOR_LEFT_OPEN: frozenset({Kind.COLD_CHAIN, Kind.MEDICAL_WASTE}),
    EventKind.MISSED_COLLECTION: frozenset({Kind.MEDICAL_WASTE}),
    EventKind.DOSING_FAILURE: frozenset({Kind.DRINKING_WATER, Kind.SWIMMING_POOL}),
    EventKind.TURBIDITY_EVENT: frozenset({Kind.DRINKING_WATER}),
}

# Parameters each kind accepts: name -> required?
EVENT_PARAMS: Final[Mapping[EventKind, Mapping[str, bool]]] = {
    EventKind.MAINS_FAILURE: {"cross_after_min": False, "ambient_c": False},
    EventKind.DOSING_FAILURE: {"decay_per_h": False},
    EventKind.TURBIDITY_EVENT: {"peak_ntu": False},
    EventKind.STUCK: {},
    EventKind.SPIKE: {"magnitude": True},
    EventKind.DRIFT: {"rate_per_h": True},
    EventKind.SLOW: {"delay_s": True},
    EventKind.EXCEPTION: {"code": False},
}


@dataclass(frozen=True, slots=True)
class Event:
    """One event on one device, in simulated unix seconds.

    Attributes:
        kind: what happens.
        start_s: when it begins.
        end_s: when it ends (infinity: until the simulation stops).
        metric: the metric a sensor fault affects (None: every metric).
        params: kind-specific numbers (see ``EVENT_PARAMS``).
    """

    kind: EventKind
    start_s: float
    end_s: float = math.inf
    metric: str | None = None
    params: Mapping[str, float] = field(default_factory=dict)

    def is_active(self, t: float) -> bool:
        """Whether the event is in force at simulated time ``t``."""
        return self.start_s <= t < self.end_s

    def param(self, name: str, default: float) -> float:
        """A parameter, or ``default`` when the scenario did not set it."""
        return self.params.get(name, default)
