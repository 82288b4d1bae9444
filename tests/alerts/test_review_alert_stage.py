"""Faults a review found in the alert stage, pinned against a real SQLite tasks database and a
real local SMS relay: completeness rules enabled by a site override, interruption alerts that
speak again once their gateway is back, escalation that resumes after a silence instead of
jumping to the top, a task claimed and closed between two ticks, and Alertmanager-style routing."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from alerts.engine import AddSilence, EngineState, Tick, TransitionKind, restore, snapshot, step
from alerts.service import AlertService, build_engine_config, new_silence
from alerts.store import Store
from tests.alerts.conftest import Receiver, make_settings
from weijian.contract import AlertState, GatewayState, GatewayStatus, Kind, MetricValue, Reading
from weijian.registry import Registry, load_registry

T0 = datetime(2026, 5, 12, 1, 0, tzinfo=UTC)
SITE, DEVICE, GATEWAY = "rv-water-001", "wq-01", "gw-rv"
HANDLER, HEAD, SUPERVISOR = "13800007001", "13800007002", "13800007009"


def water_registry(path: Path, overrides: str = "") -> Registry:
    """One tap-water site with one turbidity analyser behind one gateway; one person per level."""
    path.write_text(
        '[[districts]]\nid = "chengguan"\nname = "城关区"\nteam = "城关监督所"\n'
        f'supervisors = [{{ name = "王监督", phone = "{SUPERVISOR}" }}]\n\n'
        '[[units]]\nid = "rv-property"\nname = "人民路物业"\nlicence = "宜卫水证字〔2026〕第0001号"\n'
        f'district = "chengguan"\nhandler = {{ name = "周强", phone = "{HANDLER}" }}\n'
        f'head = {{ name = "吴敏", phone = "{HEAD}" }}\n\n'
        f'[[sites]]\nid = "{SITE}"\nname = "人民路小区末梢水"\nkind = "drinking_water"\n'
        'district = "chengguan"\nunit = "rv-property"\naddress = "城关区人民路120号"\nwater_point = "tap"\n'
        f'devices = [{{ id = "{DEVICE}", profile = "wq-analyser", metrics = ["turbidity"] }}]\n'
        f"{overrides}\n\n"
        f'[[gateways]]\nid = "{GATEWAY}"\nname = "人民路网关"\ndevices = ["{SITE}/{DEVICE}"]\n',
        encoding="utf-8",
    )
    return load_registry(path)


def turbidity(at: datetime, value: float) -> Reading:
    return Reading(site_id=SITE, device_id=DEVICE, gateway_id=GATEWAY, kind=Kind.DRINKING_WATER, ts=at,
                   seq=int(at.timestamp()), metrics={"turbidity": MetricValue(value=value, unit="NTU")})


class Clock:
    """The receiver's clock, set by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


async def _deliver(service: AlertService) -> None:
    async with httpx.AsyncClient() as client:
        while await service.worker.run_once(client):
            pass


def _told(receiver: Receiver, alert_id: str) -> list[tuple[str, int, datetime, str]]:
    """(reason, level, when, to) of every SMS the relay took about one alert, in time order."""
    got = [(m["reason"], m["level"], datetime.fromisoformat(m["at"]), m["to"])
           for m in receiver.received if alert_id in (m.get("alert_ids") or [m["alert_id"]])]
    return sorted(got, key=lambda x: x[2])


async def _fire_turbidity(service: AlertService, clock: Clock) -> str:
    """Turbidity 2.5 NTU (limit 1) for 6 minutes from T0: fires at T0+5 min; its alert id."""
    fired = []
    for m in range(7):
        clock.at = T0 + timedelta(minutes=m)
        out = await service.handle(turbidity(clock.at, 2.5))
        fired += [t for t in out if t.kind is TransitionKind.FIRING]
    [firing] = fired
    return firing.alert.alert_id


async def _tick_every(service: AlertService, clock: Clock, minutes: range,
                      before: Callable[[int], Any] | None = None) -> None:
    for m in minutes:
        clock.at = T0 + timedelta(minutes=m)
        if before is not None:
            await before(m)
        await service.tick()


# --- 1. expected_interval_min is a site override -------------------------------------------


async def test_review_completeness_rule_enabled_by_a_site_override_of_its_interval(
    tmp_path: Path, sqlite_url: str
) -> None:
    # docs/alerts.md: completeness rules ship disabled; "set expected_interval_min to the site's
    # poll interval (a site override) and enable them".
    registry = water_registry(tmp_path / "registry.toml", 'overrides = { dw-data-completeness = '
                              '{ enabled = true, expected_interval_min = 5.0, min_share = 0.8 } }')
    day_one = datetime(2026, 5, 11, 16, 0, tzinfo=UTC)  # 2026-05-12 00:00 China time
    clock = Clock(day_one - timedelta(hours=1))  # the watch begins the evening before
    service = AlertService.from_settings(make_settings(sqlite_url, "http://127.0.0.1:9/sms"), registry,
                                         now=clock)
    try:
        await service.tick()
        # Day one: every 5 minutes, all day (288 readings; a 1-minute expectation would be 20%).
        every_5 = [day_one + timedelta(minutes=5 * i) for i in range(288)]
        clock.at = every_5[-1]
        await service.handle_batch([turbidity(at, 0.3) for at in every_5])
        clock.at = day_one + timedelta(days=1, minutes=10)  # the day is over, late data's grace too
        await service.tick()
        assert [a for a in service.store.alerts() if a.rule_id == "dw-data-completeness"] == []
        # Day two: the first 18 hours only (216 of 288 = 75%, below the site's 80%).
        day_two = [every_5[-1] + timedelta(minutes=5 * (i + 1)) for i in range(216)]
        clock.at = day_two[-1]
        await service.handle_batch([turbidity(at, 0.3) for at in day_two])
        clock.at = day_one + timedelta(days=2, minutes=10)
        await service.tick()
        [alert] = [a for a in service.store.alerts() if a.rule_id == "dw-data-completeness"]
        assert alert.state is AlertState.FIRING
        assert alert.value == 75.0 and alert.threshold == 80.0
    finally:
        service.close()


# --- 2. an inhibited interruption speaks again once its gateway is back ----------------------


async def test_review_interruption_inhibited_by_an_offline_gateway_is_notified_after_the_grace(
    tmp_path: Path, sqlite_url: str, receiver: Receiver
) -> None:
    registry = water_registry(tmp_path / "registry.toml")
    clock = Clock(T0)
    service = AlertService.from_settings(make_settings(sqlite_url, receiver.url), registry, now=clock)
    try:
        await service.tick()
        await service.handle(turbidity(T0, 0.3))
        clock.at = T0 + timedelta(minutes=61)
        await service.tick()  # silent for 60 min: dw-data-interruption fires
        [interruption] = [a for a in service.state.alerts.values() if a.rule_id == "dw-data-interruption"]
        clock.at = T0 + timedelta(minutes=65)
        await service.handle(GatewayStatus(gateway_id=GATEWAY, state=GatewayState.OFFLINE, ts=clock.at))
        clock.at = T0 + timedelta(minutes=125)
        await service.handle(GatewayStatus(gateway_id=GATEWAY, state=GatewayState.ONLINE, ts=clock.at))
        # The gateway is back, the device still sends nothing. It has silent_min (60) of grace.
        await _tick_every(service, clock, range(130, 250, 5))
        await _deliver(service)
    finally:
        service.close()
    told = [(reason, level, at - T0) for reason, level, at, _ in _told(receiver, interruption.alert_id)]
    minutes = timedelta(minutes=1)
    assert told == [
        ("firing", 1, 60 * minutes),
        ("repeat", 1, 185 * minutes),  # the grace is over, the device still silent: at once
        # Escalation does not count the 120 minutes the gateway's alert spoke for it:
        # 4 minutes before (61 -> 65), so level 2 at 185 + 26 = 211 (tick 215), level 3 at 241 (245).
        ("escalated", 2, 215 * minutes),
        ("escalated", 3, 245 * minutes),
    ]


# --- 3. an ended silence resumes escalation where it stopped -----------------------------------


async def test_review_escalation_after_a_silence_resumes_instead_of_jumping_to_level_3(
    tmp_path: Path, sqlite_url: str, receiver: Receiver
) -> None:
    registry = water_registry(tmp_path / "registry.toml")
    clock = Clock(T0)
    service = AlertService.from_settings(make_settings(sqlite_url, receiver.url), registry, now=clock)
    try:
        alert_id = await _fire_turbidity(service, clock)  # fires at T0+5, level 1

        async def maintenance(minute: int) -> None:
            if minute == 10:  # two hours of calibration, set after the alert fired
                await service.silence(new_silence(SITE, 2, "探头校准", "运维", device_id=DEVICE,
                                                  rule_id="dw-turbidity-high", starts=clock.at))

        await _tick_every(service, clock, range(10, 200, 5), maintenance)
        await _deliver(service)
    finally:
        service.close()
    told = [(reason, level, at - T0, to) for reason, level, at, to in _told(receiver, alert_id)]
    minutes = timedelta(minutes=1)
    assert told == [
        ("firing", 1, 5 * minutes, HANDLER),
        ("repeat", 1, 130 * minutes, HANDLER),  # the window ended, the alert still firing
        # 5 minutes counted before the silence: level 2 after 25 more, level 3 after 55 more.
        ("escalated", 2, 155 * minutes, HEAD),
        ("escalated", 3, 185 * minutes, SUPERVISOR),
    ]


# --- 4. a task claimed and closed between two ticks acknowledges its alert --------------------


async def test_review_task_claimed_and_closed_within_one_tick_acknowledges_its_alert(
    tmp_path: Path, sqlite_url: str, receiver: Receiver
) -> None:
    registry = water_registry(tmp_path / "registry.toml")
    clock = Clock(T0)
    service = AlertService.from_settings(make_settings(sqlite_url, receiver.url), registry, now=clock)
    desk = Store(sqlite_url)  # the inspector's side: the API or the CLI, another process
    try:
        alert_id = await _fire_turbidity(service, clock)
        [task] = desk.tasks()
        assert task["alert_id"] == alert_id
        clock.at = T0 + timedelta(minutes=8)
        assert desk.claim(task["id"], "王建国", clock.at)
        assert desk.close_task(task["id"], "王建国", "现场核查：管网施工扰动，已冲洗", {}, clock.at)
        await _tick_every(service, clock, range(10, 100, 5))
        await _deliver(service)
        stored = desk.alert(alert_id)
        assert stored is not None and stored.state is AlertState.ACKNOWLEDGED
        assert stored.acked_by == "王建国"
        closed = desk.task(task["id"])
        assert closed is not None
        assert "alert_acknowledged" in [a["action"] for a in closed["audit"]]
    finally:
        desk.close()
        service.close()
    assert [reason for reason, *_ in _told(receiver, alert_id)] == ["firing"]  # no escalation


# --- 5. routing: the first matching child is descended into, the deepest reached wins ----------


async def test_review_routing_takes_the_first_matching_child_and_the_deepest_route_in_it(
    tmp_path: Path, sqlite_url: str, receiver: Receiver
) -> None:
    registry = water_registry(tmp_path / "registry.toml")
    routes = [
        {"district": "chengguan", "phones": ["13800009001"], "routes": [
            {"kind": "cold_chain", "phones": ["13800009002"]},  # does not match
            {"kind": "drinking_water", "phones": ["13800009003"], "routes": [
                {"min_severity": "critical", "phones": ["13800009004"]},  # does not match
                {"min_severity": "warning", "phones": ["13800009005"]},  # reached: the deepest
            ]},
            # A later sibling matching deeper still is not tried (alertmanager dispatch/route.go).
            {"phones": ["13800009006"], "routes": [{"routes": [{"phones": ["13800009007"]}]}]},
        ]},
        {"phones": ["13800009008"]},  # a later top-level route: not tried
    ]
    settings = make_settings(sqlite_url, receiver.url, routes=routes)
    clock = Clock(T0)
    service = AlertService.from_settings(settings, registry, now=clock)
    try:
        alert_id = await _fire_turbidity(service, clock)
        await _deliver(service)
    finally:
        service.close()
    assert sorted(to for *_, to in _told(receiver, alert_id)) == [HANDLER, "13800009005"]


# --- 3 (continued). the muted time is part of what a partition's successor takes over ---------


def test_review_the_muted_time_survives_a_takeover(tmp_path: Path, sqlite_url: str) -> None:
    # Inside ingest a partition's successor rebuilds the engine from the saved snapshot and the
    # alert rows; escalation after the silence must be the same as without the takeover.
    registry = water_registry(tmp_path / "registry.toml")
    config, _ = build_engine_config(make_settings(sqlite_url, "http://127.0.0.1:9/sms"), registry)

    def escalations(take_over_at: int | None) -> list[tuple[str, int, datetime]]:
        state = EngineState(config=config)
        for m in range(7):
            step(state, turbidity(T0 + timedelta(minutes=m), 2.5), T0 + timedelta(minutes=m))
        begin = T0 + timedelta(minutes=10)
        silence = new_silence(SITE, 2, "探头校准", "运维", device_id=DEVICE, starts=begin)
        step(state, AddSilence(silence), begin)
        out = []
        for m in range(10, 200, 5):
            if m == take_over_at:
                heir = EngineState(config=config)
                heir.alerts = {k: replace(a) for k, a in state.alerts.items()}
                heir.silences = list(state.silences)  # the store's record of active silences
                restore(heir, json.loads(json.dumps(snapshot(state))))
                state = heir
            _, ts = step(state, Tick(), T0 + timedelta(minutes=m))
            out += [(t.kind.value, t.alert.level, t.at) for t in ts if t.alert.rule_id == "dw-turbidity-high"]
        return out

    assert escalations(take_over_at=60) == escalations(take_over_at=None)
    assert [(kind, level) for kind, level, _ in escalations(None)] == [
        ("repeat", 1), ("escalated", 2), ("escalated", 3)]
