"""Scenario files: which devices to simulate, on which transports, and what happens when.

A scenario is a TOML file (bundled ones live in ``firmware_sim/scenarios/``). Loading checks
everything a person could get wrong and names the file and the key: unknown profiles,
parameters a kind's model does not have, RTU devices without a line, clashing unit ids,
events for devices that do not exist or faults that make no sense for the device. The format
is documented in ``docs/firmware_sim.md``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from importlib import resources
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from firmware_sim.events import COMM_FAULTS, EVENT_PARAMS, KINDS_OF, SENSOR_FAULTS, Event, EventKind
from firmware_sim.signals import coerce_params
from weijian.contract import Identifier
from weijian.device_profile import DeviceProfile, ProfileError, load_profile
from weijian.errors import ScenarioError
from weijian.tomlfile import read_toml, validation_problem

__all__ = [
    "DeviceEntry",
    "EventEntry",
    "LineEntry",
    "Scenario",
    "ScenarioError",
    "Transport",
    "default_end",
    "list_scenarios",
    "load_scenario",
]


class Transport(StrEnum):
    """How a simulated device is reached."""

    TCP = "tcp"  # Modbus TCP on its own (or a shared) port
    RTU = "rtu"  # Modbus RTU on a pseudo-terminal RS-485 line


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LineEntry(_Entry):
    """An RS-485 line; ``baudrate`` is what the gateway should configure (a pty ignores it)."""

    id: Identifier
    baudrate: int = Field(9600, gt=0)


class DeviceEntry(_Entry):
    """A simulated device at a registry site."""

    site_id: Identifier
    device_id: Identifier
    profile: str = Field(min_length=1)
    transport: Transport = Transport.TCP
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    line: Identifier | None = None
    unit_id: int | None = Field(None, ge=1, le=247)
    update_s: float = Field(1.0, gt=0)
    params: dict[str, float] = {}

    @property
    def key(self) -> str:
        """``site_id/device_id``."""
        return f"{self.site_id}/{self.device_id}"


class EventEntry(_Entry):
    """An event on one device, ``at_h`` hours after the scenario start, for ``for_h`` hours."""

    device: str
    kind: EventKind
    at_h: float = Field(ge=0)
    for_h: float | None = Field(None, gt=0)
    metric: str | None = None
    params: dict[str, float] = {}


class _ScenarioFile(_Entry):
    name: str = Field(min_length=1)
    description: str = ""
    start: AwareDatetime
    speed: float = Field(1.0, ge=0)
    seed: int = 0
    duration_h: float | None = Field(None, gt=0)
    lines: list[LineEntry] = []
    devices: list[DeviceEntry] = Field(min_length=1)
    events: list[EventEntry] = []


@dataclass(frozen=True)
class Scenario:
    """A loaded, checked scenario.

    Attributes:
        path: the file it came from.
        name: its name.
        description: what it shows.
        start: simulated start time.
        speed: default speed factor.
        seed: default seed.
        duration_h: how long the story takes (informative; ``sim run`` runs until stopped).
        lines: RS-485 lines by id.
        devices: the devices, in file order.
        profiles: the profile of each device, by ``site_id/device_id``.
        events: the events of each device, by ``site_id/device_id``.
    """

    path: Path
    name: str
    description: str
    start: datetime
    speed: float
    seed: int
    duration_h: float | None
    lines: dict[str, LineEntry]
    devices: tuple[DeviceEntry, ...]
    profiles: dict[str, DeviceProfile]
    events: dict[str, list[Event]]

    @property
    def start_s(self) -> float:
        """The start as unix seconds."""
        return self.start.timestamp()

    def starting_at(self, start: datetime) -> Scenario:
        """The same story told from another start: every event moves with it."""
        delta = start.timestamp() - self.start_s
        events = {
            key: [dataclasses.replace(e, start_s=e.start_s + delta, end_s=e.end_s + delta) for e in evs]
            for key, evs in self.events.items()
        }
        return dataclasses.replace(self, start=start, events=events)


def _bundled_dir() -> Path:
    return Path(str(resources.files("firmware_sim") / "scenarios"))


def list_scenarios() -> list[str]:
    """Names of the bundled scenarios, sorted."""
    return sorted(p.stem for p in _bundled_dir().glob("*.toml"))


def _resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".toml"):
        return Path(name_or_path)
    path = _bundled_dir() / f"{text}.toml"
    if not path.is_file():
        raise ScenarioError(
            f"scenario {text!r}: no such bundled scenario (known: {', '.join(list_scenarios())})"
        )
    return path


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load and check a scenario by bundled name or path.

    Raises:
        ScenarioError: the file is missing, not TOML, or inconsistent; every message names
            the file and the key (``devices[2].params.low_c``).
    """
    path = _resolve(name_or_path)
    data = read_toml(path, ScenarioError, "scenario")
    try:
        raw = _ScenarioFile.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(path, exc, ScenarioError) from exc
    problems: list[str] = []
    profiles = _check_devices(raw, problems, path.parent)
    events = _check_events(raw, profiles, problems)
    if problems:
        raise ScenarioError("\n".join(f"{path}: {p}" for p in problems))
    return Scenario(
        path=path,
        name=raw.name,
        description=raw.description,
        start=raw.start,
        speed=raw.speed,
        seed=raw.seed,
        duration_h=raw.duration_h,
        lines={line.id: line for line in raw.lines},
        devices=tuple(raw.devices),
        profiles=profiles,
        events=events,
    )


def _check_devices(raw: _ScenarioFile, problems: list[str], base: Path) -> dict[str, DeviceProfile]:
    profiles: dict[str, DeviceProfile] = {}
    line_ids = {line.id for line in raw.lines}
    if len(line_ids) != len(raw.lines):
        problems.append("key 'lines': two lines share an id")
    units: dict[tuple[str, object], str] = {}
    for i, d in enumerate(raw.devices):
        where = f"key 'devices[{i}]"
        if d.key in profiles:
            problems.append(f"{where}': {d.key} appears twice")
            continue
        try:
            profile = load_profile(d.profile, base)
        except ProfileError as exc:
            problems.append(f"{where}.profile': {exc}")
            continue
        if not profile.registers:
            problems.append(f"{where}.profile': {d.profile!r} has no Modbus registers "
                            "(an HJ 212-only instrument)")
            continue
        profiles[d.key] = profile
        try:
            coerce_params(profile.kind, d.params)
        except ValueError as exc:
            name, _, detail = str(exc).partition(": ")
            problems.append(f"{where}.params.{name}': {detail}")
        unit = d.unit_id or profile.default_unit_id
        if d.transport is Transport.RTU:
            if d.line is None:
                problems.append(f"{where}.line': an rtu device needs the id of its line")
                continue
            if d.line not in line_ids:
                problems.append(f"{where}.line': no line {d.line!r} in 'lines'")
                continue
            bus: tuple[str, object] = ("rtu", d.line)
        else:
            if d.line is not None:
                problems.append(f"{where}.line': only rtu devices sit on a line")
            if d.port == 0:
                continue  # a port of its own
            bus = ("tcp", (d.host, d.port))
        other = units.setdefault((str(bus), unit), d.key)
        if other != d.key:
            problems.append(f"{where}.unit_id': unit id {unit} is already used by {other}")
    return profiles


def default_end(kind: EventKind, start_s: float) -> float:
    """When an event without a duration ends: a spike lasts a minute, the rest until stopped."""
    return start_s + 60 if kind is EventKind.SPIKE else math.inf


def _check_events(
    raw: _ScenarioFile, profiles: dict[str, DeviceProfile], problems: list[str]
) -> dict[str, list[Event]]:
    events: dict[str, list[Event]] = {key: [] for key in profiles}
    transports = {d.key: d.transport for d in raw.devices}
    start = raw.start.timestamp()
    for i, e in enumerate(raw.events):
        where = f"key 'events[{i}]"
        profile = profiles.get(e.device)
        if profile is None:
            problems.append(f"{where}.device': no device {e.device!r} in 'devices'")
            continue
        kinds = KINDS_OF.get(e.kind)
        if kinds is not None and profile.kind not in kinds:
            problems.append(f"{where}.kind': {e.kind.value} does not happen to a {profile.kind.value} device")
        if e.kind in COMM_FAULTS - {EventKind.SILENT, EventKind.SLOW, EventKind.EXCEPTION} and (
            transports[e.device] is not Transport.RTU
        ):
            problems.append(f"{where}.kind': {e.kind.value} is a serial-line fault (rtu only)")
        if e.metric is not None:
            if e.kind not in SENSOR_FAULTS:
                problems.append(f"{where}.metric': only sensor faults take a metric")
            elif e.metric not in profile.registers:
                problems.append(f"{where}.metric': {profile.model} has no metric {e.metric!r}")
        allowed = EVENT_PARAMS.get(e.kind, {})
        for name in e.params:
            if name not in allowed:
                problems.append(
                    f"{where}.params.{name}': {e.kind.value} takes {', '.join(allowed) or 'no parameters'}"
                )
        for name, required in allowed.items():
            if required and name not in e.params:
                problems.append(f"{where}.params.{name}': required for {e.kind.value}")
        begin = start + e.at_h * 3600
        end = begin + e.for_h * 3600 if e.for_h is not None else default_end(e.kind, begin)
        events[e.device].append(Event(e.kind, begin, end, e.metric, dict(e.params)))
    return events
