"""Running a scenario: devices, servers and the clock, as an async context manager.

The shell of the simulator. Other stages' tests and the demo use it in-process::

    async with run_scenario(load_scenario("normal-day"), speed=1440) as sim:
        for ep in sim.endpoints:            # where each device is served
            print(ep.describe())
        sim.values("yc-cc-001", "fr-01")    # true and reported values right now
        sim.inject("yc-cc-001", "fr-01", EventKind.SILENT, for_s=30)

Leaving the block closes every socket and pty. The only task is a named watcher in a
TaskGroup that logs events as they begin and end; the servers themselves run on loop
callbacks, so a fault in one connection cannot take a device down.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from firmware_sim.clock import SimClock
from firmware_sim.device import DeviceState, SimulatedDevice
from firmware_sim.events import EVENT_PARAMS, Event, EventKind
from firmware_sim.rtu import RtuLine
from firmware_sim.scenario import Scenario, ScenarioError, Transport, default_end
from firmware_sim.signals import build_model, uniform
from firmware_sim.tcp import TcpEndpoint

__all__ = ["Endpoint", "Simulation", "run_scenario"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one device is served.

    Attributes:
        site_id: registry site.
        device_id: registry device.
        profile: the profile (instrument model) name.
        unit_id: Modbus unit id.
        transport: tcp or rtu.
        host: TCP host (tcp only).
        port: TCP port (tcp only; the bound one when the scenario said 0).
        serial_path: pty slave path (rtu only).
        line: RS-485 line id (rtu only).
        baudrate: line speed a gateway should configure (rtu only).
    """

    site_id: str
    device_id: str
    profile: str
    unit_id: int
    transport: Transport
    host: str = ""
    port: int = 0
    serial_path: str = ""
    line: str = ""
    baudrate: int = 0

    @property
    def key(self) -> str:
        """``site_id/device_id``."""
        return f"{self.site_id}/{self.device_id}"

    def describe(self) -> str:
        """One line for people: which address serves which device."""
        if self.transport is Transport.TCP:
            where = f"tcp://{self.host}:{self.port}"
        else:
            where = f"rtu:{self.serial_path} (line {self.line}, {self.baudrate} baud)"
        return f"{self.key:<24} {self.profile:<20} unit {self.unit_id:<3} {where}"


class Simulation:
    """A running scenario; obtained from :func:`run_scenario`."""

    def __init__(self, scenario: Scenario, clock: SimClock, seed: int) -> None:
        self.scenario = scenario
        self.clock = clock
        self.seed = seed
        self.devices: dict[str, SimulatedDevice] = {}
        self.endpoints: list[Endpoint] = []
        self.tcp: list[TcpEndpoint] = []
        self.lines: dict[str, RtuLine] = {}

    def device(self, site_id: str, device_id: str) -> SimulatedDevice:
        """The simulated device, for anything the shortcuts below do not cover.

        Raises:
            KeyError: no such device in the scenario.
        """
        return self.devices[f"{site_id}/{device_id}"]

    def endpoint(self, site_id: str, device_id: str) -> Endpoint:
        """Where the device is served.

        Raises:
            KeyError: no such device in the scenario.
        """
        key = f"{site_id}/{device_id}"
        for ep in self.endpoints:
            if ep.key == key:
                return ep
        raise KeyError(key)

    def values(self, site_id: str, device_id: str) -> DeviceState:
        """What the device holds in its current measurement cycle: truth and report."""
        return self.device(site_id, device_id).state()

    def inject(
        self,
        site_id: str,
        device_id: str,
        kind: EventKind,
        *,
        metric: str | None = None,
        for_s: float | None = None,
        in_s: float = 0.0,
        **params: float,
    ) -> Event:
        """Make something happen to a device now (or ``in_s`` simulated seconds from now).

        Args:
            site_id: the site.
            device_id: the device.
            kind: what happens.
            metric: the metric a sensor fault affects (None: all).
            for_s: how long, in simulated seconds (None: a spike lasts a minute, anything
                else until cleared).
            in_s: simulated seconds until it begins.
            **params: kind-specific numbers: ``delay_s`` (slow; wall-clock seconds),
                ``code`` (exception), ``magnitude`` (spike), ``rate_per_h`` (drift),
                ``cross_after_min`` and ``ambient_c`` (mains failure), ``peak_ntu``,
                ``decay_per_h``.

        Returns:
            The event, which :meth:`withdraw` takes back.

        Raises:
            KeyError: no such device.
            ValueError: a parameter the kind does not take, a required one missing, or a
                serial-line fault (garbled, bad_crc) for a TCP device.
        """
        allowed = EVENT_PARAMS.get(kind, {})
        extra = set(params) - set(allowed)
        missing = {name for name, required in allowed.items() if required} - set(params)
        if extra or missing:
            raise ValueError(f"{kind.value}: unexpected {sorted(extra)} / missing {sorted(missing)}")
        device = self.device(site_id, device_id)
        if kind in (EventKind.GARBLED, EventKind.BAD_CRC) and (
            self.endpoint(site_id, device_id).transport is not Transport.RTU
        ):
            raise ValueError(f"{kind.value} is a serial-line fault; {device.key} is on TCP")
        start = self.clock.now() + in_s
        end = start + for_s if for_s is not None else default_end(kind, start)
        event = device.inject(Event(kind, start, end, metric, dict(params)))
        log.info(
            "sim.fault_injected",
            extra={"device": device.key, "kind": kind.value, "for_s": for_s, "metric": metric},
        )
        return event

    def withdraw(self, site_id: str, device_id: str, event: Event) -> None:
        """Take back an injected or scheduled event."""
        self.device(site_id, device_id).remove(event)

    def clear(self, site_id: str, device_id: str, kind: EventKind | None = None) -> int:
        """Remove every event (of ``kind``) from a device; returns how many."""
        return self.device(site_id, device_id).clear(kind)

    async def _watch_events(self) -> None:
        """Log each event when it begins and ends (a change, not a repetition)."""
        reported: set[tuple[str, int, bool]] = set()
        while True:
            now = self.clock.now()
            for device in self.devices.values():
                for e in device.events:
                    for is_end, at in ((False, e.start_s), (True, e.end_s)):
                        mark = (device.key, id(e), is_end)
                        if math.isfinite(at) and at <= now and mark not in reported:
                            reported.add(mark)
                            log.info(
                                "sim.event_ended" if is_end else "sim.event_began",
                                extra={"device": device.key, "kind": e.kind.value},
                            )
            await asyncio.sleep(1.0)


@asynccontextmanager
async def run_scenario(
    scenario: Scenario,
    *,
    speed: float | None = None,
    seed: int | None = None,
    start_offset_h: float = 0.0,
) -> AsyncIterator[Simulation]:
    """Serve every device of ``scenario`` until the block exits.

    Args:
        scenario: the loaded scenario.
        speed: simulated seconds per wall second (default: the scenario's); 0 stops the
            clock, which then moves only by ``sim.clock.advance()``.
        seed: overrides the scenario's seed.
        start_offset_h: begin this many simulated hours into the scenario.

    Yields:
        The running :class:`Simulation`.

    Raises:
        ScenarioError: a port is taken or a pty cannot be opened.
    """
    use_seed = scenario.seed if seed is None else seed
    clock = SimClock(scenario.start_s + start_offset_h * 3600, scenario.speed if speed is None else speed)
    sim = Simulation(scenario, clock, use_seed)
    tcp_groups: dict[tuple[str, int], dict[int, SimulatedDevice]] = {}
    line_groups: dict[str, dict[int, SimulatedDevice]] = {}
    for index, entry in enumerate(scenario.devices):
        profile = scenario.profiles[entry.key]
        device_seed = int(uniform(use_seed, entry.key) * 2**31)
        model = build_model(profile.kind, entry.params, device_seed, scenario.start_s)
        unit = entry.unit_id or profile.default_unit_id
        device = SimulatedDevice(
            entry.site_id,
            entry.device_id,
            profile,
            unit,
            model,
            clock,
            list(scenario.events[entry.key]),
            entry.update_s,
        )
        sim.devices[entry.key] = device
        if entry.transport is Transport.RTU:
            assert entry.line is not None
            line_groups.setdefault(entry.line, {})[unit] = device
        else:
            # port 0: a port of its own, found by its index
            group = (entry.host, entry.port if entry.port else -index - 1)
            tcp_groups.setdefault(group, {})[unit] = device
    try:
        for (host, port), devices in tcp_groups.items():
            endpoint = TcpEndpoint(devices, host, max(port, 0))
            sim.tcp.append(endpoint)
            try:
                await endpoint.start()
            except OSError as exc:
                raise ScenarioError(
                    f"{scenario.path}: cannot listen on {host}:{max(port, 0)}: {exc}"
                ) from exc
            for device in devices.values():
                sim.endpoints.append(
                    Endpoint(
                        device.site_id,
                        device.device_id,
                        device.profile.model,
                        device.unit_id,
                        Transport.TCP,
                        host=host,
                        port=endpoint.port,
                    )
                )
        for line_id, devices in line_groups.items():
            line = RtuLine(line_id, devices, seed=use_seed)
            sim.lines[line_id] = line
            try:
                await line.start()
            except OSError as exc:
                raise ScenarioError(f"{scenario.path}: cannot open a pty: {exc}") from exc
            for device in devices.values():
                sim.endpoints.append(
                    Endpoint(
                        device.site_id,
                        device.device_id,
                        device.profile.model,
                        device.unit_id,
                        Transport.RTU,
                        serial_path=line.path,
                        line=line_id,
                        baudrate=scenario.lines[line_id].baudrate,
                    )
                )
        order = {entry.key: i for i, entry in enumerate(scenario.devices)}
        sim.endpoints.sort(key=lambda ep: order[ep.key])
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(sim._watch_events(), name="sim-event-watcher")
            try:
                yield sim
            finally:
                watcher.cancel()
    finally:
        for tcp in sim.tcp:
            await tcp.close()
        for line in sim.lines.values():
            await line.close()
