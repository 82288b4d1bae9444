"""One simulated instrument: a signal model, its profile, its events and its register image.

The device is where the three families of events meet: the model produces true values
under the physical events, sensor faults turn them into reported values and status bits,
the profile lays those out in registers, and communication faults decide how the device
answers a request. The image is recomputed at most once per ``update_s`` of simulated time,
as an instrument refreshes its registers once per measurement cycle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from firmware_sim.clock import SimClock
from firmware_sim.events import COMM_FAULTS, PHYSICAL, Event, EventKind
from firmware_sim.faults import WireBehaviour, apply_sensor_faults, wire_behaviour
from firmware_sim.modbus import ExceptionCode, answer, exception_pdu
from firmware_sim.registers import RegisterImage, build_image
from firmware_sim.signals import SignalModel
from weijian.device_profile import DeviceProfile, StatusBit

__all__ = ["DeviceState", "Reply", "SimulatedDevice"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What a device holds at one simulated instant.

    Attributes:
        t: the simulated time of the measurement cycle (unix seconds).
        true_values: the physical truth.
        reported: what the instrument reports (after sensor faults, before encoding).
        status_bits: status bits raised by faults (over-range is added by encoding).
    """

    t: float
    true_values: Mapping[str, float]
    reported: Mapping[str, float]
    status_bits: frozenset[StatusBit]


@dataclass(frozen=True, slots=True)
class Reply:
    """The device's answer to one request: a PDU (None: no answer) and how to send it."""

    pdu: bytes | None
    wire: WireBehaviour


class SimulatedDevice:
    """A simulated instrument at a site.

    Args:
        site_id: the site, as in the registry.
        device_id: the device, as in the registry.
        profile: its register map.
        unit_id: its Modbus unit id.
        model: its signal model.
        clock: the simulation clock.
        events: scheduled events.
        update_s: simulated seconds between measurement cycles.
    """

    def __init__(
        self,
        site_id: str,
        device_id: str,
        profile: DeviceProfile,
        unit_id: int,
        model: SignalModel,
        clock: SimClock,
        events: list[Event] | None = None,
        update_s: float = 1.0,
    ) -> None:
        self.site_id = site_id
        self.device_id = device_id
        self.profile = profile
        self.unit_id = unit_id
        self.model = model
        self.clock = clock
        self.events: list[Event] = list(events or [])
        self.update_s = update_s
        self.requests_answered = 0
        self._cached_at = math.nan
        self._image = RegisterImage()

    @property
    def key(self) -> str:
        """``site_id/device_id``, as the registry's gateways list names devices."""
        return f"{self.site_id}/{self.device_id}"

    def cycle_time(self, t: float | None = None) -> float:
        """The start of the measurement cycle ``t`` (default: now) falls in."""
        now = self.clock.now() if t is None else t
        return math.floor(now / self.update_s) * self.update_s

    def state(self, t: float | None = None) -> DeviceState:
        """True and reported values at ``t`` (default: the current measurement cycle)."""
        at = self.cycle_time(t)
        physical = [e for e in self.events if e.kind in PHYSICAL]
        true_values = self.model.sample(at, physical)
        reported, bits = apply_sensor_faults(
            true_values, self.events, at, lambda s: self.model.sample(s, physical)
        )
        return DeviceState(at, true_values, reported, frozenset(bits))

    def image(self) -> RegisterImage:
        """The register image of the current measurement cycle."""
        at = self.cycle_time()
        if at != self._cached_at:
            state = self.state(at)
            self._image = build_image(self.profile, state.reported, set(state.status_bits), at)
            self._cached_at = at
        return self._image

    def inject(self, event: Event) -> Event:
        """Add an event (scheduled or immediate) and return it, for :meth:`remove`."""
        self.events.append(event)
        self._cached_at = math.nan
        return event

    def remove(self, event: Event) -> None:
        """Withdraw an event added before."""
        self.events.remove(event)
        self._cached_at = math.nan

    def clear(self, kind: EventKind | None = None) -> int:
        """Withdraw every event (of ``kind``); returns how many were removed."""
        before = len(self.events)
        self.events = [e for e in self.events if kind is not None and e.kind is not kind]
        self._cached_at = math.nan
        return before - len(self.events)

    def wire(self) -> WireBehaviour:
        """How the device answers right now."""
        comm = [e for e in self.events if e.kind in COMM_FAULTS]
        return wire_behaviour(comm, self.clock.now()) if comm else WireBehaviour()

    def respond(self, pdu: bytes) -> Reply:
        """Answer a request PDU, obeying the communication faults in force."""
        wire = self.wire()
        if wire.silent:
            return Reply(None, wire)
        self.requests_answered += 1
        fc = pdu[0] if pdu else 0
        if wire.exception_code is not None:
            return Reply(exception_pdu(fc, wire.exception_code), wire)
        try:
            return Reply(answer(self.image(), pdu), wire)
        except Exception:
            # A bug in a model must not kill the connection: answer as a failing instrument.
            log.exception("sim.device_error", extra={"device": self.key})
            return Reply(exception_pdu(fc, ExceptionCode.SERVER_DEVICE_FAILURE), wire)
