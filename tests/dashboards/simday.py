"""Fill InfluxDB with a simulated day: firmware_sim's signal models, contract Readings, and the
alert state changes the rule packs imply, written as line protocol per docs/contract.md.

The gateway and ingest stages are built in parallel, so this helper stands in for them: it
samples each scenario device's model (with its events: faults, incidents, a silent analyser)
every ``step_s``, builds a :class:`weijian.contract.Reading` (which checks metrics and units),
and writes the points ingest would write. Alerts: a naive range-rule evaluation (no for_min,
no hysteresis) emits ``firing`` at the first breach and ``resolved`` at the first value back
inside, as :class:`weijian.contract.AlertEvent`s.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from firmware_sim.clock import SimClock
from firmware_sim.device import SimulatedDevice
from firmware_sim.events import COMM_FAULTS
from firmware_sim.faults import wire_behaviour
from firmware_sim.scenario import load_scenario
from firmware_sim.signals import build_model, uniform
from weijian.contract import AlertEvent, AlertState, Flag, Kind, MetricValue, Reading, unit_of
from weijian.demo.local_services import Influx
from weijian.registry import Registry
from weijian.rules import RulePack, RuleType, rules_for_site


@dataclass(frozen=True)
class Day:
    """What was written: the day's range, readings, alerts, and the silent devices' windows."""

    start: datetime
    end: datetime
    readings: int
    alerts: list[AlertEvent]


@dataclass(frozen=True)
class FilledInflux:
    """A database holding the simulated day."""

    influx: Influx
    database: str
    day: Day


def _escape_tag(value: str) -> str:
    return value.replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _escape_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def reading_line(reading: Reading, district: str) -> str:
    """One reading as a line-protocol point (docs/contract.md, InfluxDB schema)."""
    tags = ",".join(f"{k}={_escape_tag(v)}" for k, v in (
        ("device_id", reading.device_id), ("district", district),
        ("gateway_id", reading.gateway_id), ("site_id", reading.site_id),
    ))
    fields = []
    for name, metric in sorted(reading.metrics.items()):
        if metric.value is not None:
            fields.append(f"{name}={float(metric.value)!r}")
        if metric.flag is not Flag.NORMAL:
            fields.append(f"{name}_flag={_escape_str(metric.flag.value)}")
    ns = int(reading.ts.timestamp()) * 1_000_000_000
    return f"{reading.kind.value},{tags} {','.join(fields)} {ns}"


def alert_line(event: AlertEvent) -> str:
    """One alert state change as a point of the ``alert`` measurement."""
    tags = ",".join(f"{k}={_escape_tag(v)}" for k, v in (
        ("device_id", event.device_id), ("district", event.district), ("kind", event.kind.value),
        ("rule", event.rule), ("severity", event.severity), ("site_id", event.site_id),
    ))
    fields = [f"alert_id={_escape_str(event.alert_id)}", f"state={_escape_str(event.state.value)}",
              f"message={_escape_str(event.message)}"]
    if event.value is not None:
        fields.append(f"value={event.value!r}")
    if event.threshold is not None:
        fields.append(f"threshold={event.threshold!r}")
    ns = int(event.ts.timestamp() * 1000) * 1_000_000
    return f"alert,{tags} {','.join(fields)} {ns}"


def _readings(registry: Registry, scenario_name: str, step_s: float) -> Iterator[Reading]:
    scenario = load_scenario(scenario_name)
    clock = SimClock(scenario.start_s, speed=0.0)
    gateway_of = {ref: gw.id for gw in registry.gateways.values() for ref in gw.devices}
    seq: dict[str, int] = {}
    steps = int(24 * 3600 // step_s)
    for entry in scenario.devices:
        profile = scenario.profiles[entry.key]
        seed = int(uniform(scenario.seed, entry.key) * 2**31)
        model = build_model(profile.kind, entry.params, seed, scenario.start_s)
        events = list(scenario.events[entry.key])
        device = SimulatedDevice(entry.site_id, entry.device_id, profile, 1, model, clock, events)
        registered = registry.device(entry.site_id, entry.device_id)
        assert registered is not None, entry.key
        gateway_id = gateway_of[entry.key]
        comm = [e for e in events if e.kind in COMM_FAULTS]
        for i in range(steps):
            t = scenario.start_s + i * step_s
            if comm and wire_behaviour(comm, t).silent:
                continue  # the gateway got no answer: nothing reaches InfluxDB
            state = device.state(t)
            flag = Flag.NORMAL
            for bit in state.status_bits:
                flag = bit.flag
            metrics = {
                m: MetricValue(value=float(state.reported[m]), unit=unit_of(profile.kind, m) or "", flag=flag)
                for m in registered.metrics if m in state.reported and math.isfinite(state.reported[m])
            }
            seq[gateway_id] = seq.get(gateway_id, 0) + 1
            yield Reading(
                site_id=entry.site_id, device_id=entry.device_id, gateway_id=gateway_id,
                kind=profile.kind, ts=datetime.fromtimestamp(t, UTC), seq=seq[gateway_id], metrics=metrics,
            )


def _alerts(readings: list[Reading], registry: Registry, packs: Mapping[Kind, RulePack]) -> list[AlertEvent]:
    open_: dict[tuple[str, str, str], AlertEvent] = {}
    out: list[AlertEvent] = []
    for reading in sorted(readings, key=lambda r: r.ts):
        site = registry.sites[reading.site_id]
        for rule in rules_for_site(site, packs):
            if rule.type is not RuleType.RANGE or not rule.enabled or rule.metric not in reading.metrics:
                continue
            value = reading.metrics[rule.metric].value
            if value is None or reading.metrics[rule.metric].flag is not Flag.NORMAL:
                continue
            low = rule.min is not None and value < rule.min
            high = rule.max is not None and value > rule.max
            key = (reading.site_id, reading.device_id, rule.id)
            if (low or high) and key not in open_:
                event = AlertEvent(
                    alert_id=f"{rule.id}-{reading.site_id}-{reading.device_id}-{int(reading.ts.timestamp())}",
                    site_id=reading.site_id, device_id=reading.device_id, kind=reading.kind,
                    district=site.district, rule=rule.id, severity=rule.severity.value,
                    state=AlertState.FIRING, value=value,
                    threshold=rule.min if low else rule.max, message=rule.title, ts=reading.ts,
                )
                open_[key] = event
                out.append(event)
            elif not (low or high) and key in open_:
                fired = open_.pop(key)
                out.append(fired.model_copy(update={"state": AlertState.RESOLVED, "value": value,
                                                    "ts": reading.ts}))
    return out


def fill_day(influx_url: str, database: str, registry: Registry, packs: Mapping[Kind, RulePack],
             scenario: str = "demo-city", step_s: float = 300.0) -> Day:
    """Write the scenario's day (readings every ``step_s``, plus alerts) into ``database``."""
    readings = list(_readings(registry, scenario, step_s))
    alerts = _alerts(readings, registry, packs)
    lines = [reading_line(r, registry.sites[r.site_id].district) for r in readings]
    lines += [alert_line(a) for a in alerts]
    for i in range(0, len(lines), 5000):
        response = httpx.post(f"{influx_url}/write", params={"db": database, "precision": "ns"},
                              content="\n".join(lines[i:i + 5000]).encode(), timeout=30)
        assert response.status_code == 204, response.text
    start = min(r.ts for r in readings)
    return Day(start, start + timedelta(days=1), len(readings), alerts)
