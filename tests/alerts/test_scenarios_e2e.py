"""Acceptance: firmware_sim scenarios, sampled once a simulated minute into contract Readings,
fed to AlertService through its inbox, against a real database and a real HTTP receiver.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerts.service import AlertService
from alerts.store import Store
from firmware_sim.scenario import load_scenario
from firmware_sim.service import run_scenario
from tests.alerts.conftest import Receiver, SimSampler, make_settings
from weijian.contract import AlertEvent, AlertState, GatewayStatus, Reading
from weijian.registry import Registry

STEP_S = 60.0


async def drive(scenario: str, url: str, receiver: Receiver, registry: Registry,
                **alerts: Any) -> tuple[AlertService, list[AlertEvent]]:
    """Run the whole scenario through the service; return it and every alert event."""
    settings = make_settings(url, receiver.url, **alerts)
    scen = load_scenario(scenario)
    registry = only_devices(registry, {(d.site_id, d.device_id) for d in scen.devices})
    async with run_scenario(scen, speed=0) as sim:
        clock = {"t": sim.clock.start_s}
        service = AlertService.from_settings(
            settings, registry, now=lambda: datetime.fromtimestamp(clock["t"], UTC))
        gateway_of = {(s.id, d.id): registry.gateway_of(s.id, d.id) or "gw" for s, d in registry.devices()}
        sampler = SimSampler(sim, gateway_of)
        inbox: asyncio.Queue[Reading | GatewayStatus] = asyncio.Queue(maxsize=1000)
        events: asyncio.Queue[AlertEvent] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(service.run(inbox, events), name="alerts-under-test")
            t = sim.clock.start_s
            end = sim.clock.start_s + scen.duration_h * 3600
            n = 0
            while t < end:
                clock["t"] = t
                for reading in sampler.readings_at(t):
                    await inbox.put(reading)
                n += 1
                if n % 5 == 0:
                    await inbox.join()
                    await service.tick(events)
                t += STEP_S
            await inbox.join()
            await service.tick(events)
            async with asyncio.timeout(20):
                while await asyncio.to_thread(service.store.pending_count):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            runner.cancel()
    out = []
    while not events.empty():
        out.append(events.get_nowait())
    return service, out


def only_devices(registry: Registry, keep: set[tuple[str, str]]) -> Registry:
    """The registry cut down to the scenario's devices (the rest would rightly go silent)."""
    sites = {}
    for site in registry.sites.values():
        devices = tuple(d for d in site.devices if (site.id, d.id) in keep)
        if devices:
            sites[site.id] = dataclasses.replace(site, devices=devices)
    return dataclasses.replace(
        registry, sites=sites,
        _devices={k: v for k, v in registry._devices.items() if k in keep},
        _served_by={k: v for k, v in registry._served_by.items() if k in keep},
    )


def fired(events: list[AlertEvent]) -> Counter[tuple[str, str, str]]:
    return Counter((e.site_id, e.device_id, e.rule) for e in events if e.state is AlertState.FIRING)


def resolved(events: list[AlertEvent]) -> set[tuple[str, str, str]]:
    return {(e.site_id, e.device_id, e.rule) for e in events if e.state is AlertState.RESOLVED}


def sms_by_recipient(receiver: Receiver) -> Counter[tuple[str, str]]:
    return Counter((m["alert_id"], m["to"]) for m in receiver.received)


SCENARIOS = {
    "cold-chain-mains-failure": {
        ("yc-cc-001", "fr-01", "cc-power-lost"), ("yc-cc-001", "fr-01", "cc-excursion-high"),
    },
    "pool-chlorine-low": {("yc-pool-001", "pc-01", "sp-free-chlorine-low")},
    "water-turbidity-spike": {("yc-water-002", "wq-01", "dw-turbidity-high")},
    "waste-not-collected": {("yc-mw-001", "th-01", "mw-not-collected")},
    "device-silent": {("xh-water-001", "wq-01", "dw-data-interruption")},
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_scenario_gives_expected_alerts_tasks_and_sms(
    scenario: str, sqlite_url: str, receiver: Receiver, registry: Registry
) -> None:
    service, events = await drive(scenario, sqlite_url, receiver, registry)
    actionable = {k for k, n in fired(events).items()
                  if next(e for e in events if (e.site_id, e.device_id, e.rule) == k).severity != "info"}
    assert actionable == SCENARIOS[scenario], fired(events)
    assert all(n == 1 for n in fired(events).values()), fired(events)
    # resolution once back inside the clear band (every expected alert ends resolved)
    assert SCENARIOS[scenario] <= resolved(events)
    tasks = service.store.tasks()
    assert Counter(t["rule_id"] for t in tasks) == Counter(k[2] for k in SCENARIOS[scenario])
    assert all(t["title"].startswith("巡查核查：") and t["status"] == "open" for t in tasks)
    # one first SMS per recipient per alert (the unit's handler, level 1) ...
    first = Counter((m["alert_id"], m["to"]) for m in receiver.received if m["reason"] == "firing")
    assert first and all(n == 1 for n in first.values()), first
    assert {a for a, _ in first} == {t["alert_id"] for t in tasks}
    # ... and no recipient told twice about one alert inside the repeat interval
    times: dict[tuple[str, str], list[datetime]] = {}
    for m in receiver.received:
        if m["reason"] == "task_overdue":
            continue  # a different message: the task's SLA ran out
        times.setdefault((m["alert_id"], m["to"]), []).append(datetime.fromisoformat(m["at"]))
    for stamps in times.values():
        stamps.sort()
        assert all(b - a >= timedelta(minutes=240) for a, b in itertools.pairwise(stamps)), stamps
    assert receiver.bad_signatures == 0
    service.close()


async def test_cold_chain_on_postgres(postgres_url: str, receiver: Receiver, registry: Registry) -> None:
    service, events = await drive("cold-chain-mains-failure", postgres_url, receiver, registry)
    assert set(fired(events)) >= SCENARIOS["cold-chain-mains-failure"]
    assert len(service.store.tasks()) == 2
    service.close()
    # a restart loads the same open alerts and fires none of them again
    again = Store(postgres_url)
    assert again.open_alerts() == []
    again.close()
