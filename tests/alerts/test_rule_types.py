"""The rule types the standards need beyond a single threshold, through the engine's step():
cumulative excursions (WHO single event vs cumulative), medical-waste dwell per load, pool
equipment stopped for 4 h, and daily data completeness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.dispatch import Dispatch, describe
from alerts.engine import (
    DeviceInfo,
    EngineConfig,
    EngineState,
    Tick,
    TransitionKind,
    restore,
    snapshot,
    step,
)
from tests.alerts.conftest import EXAMPLE_REGISTRY
from weijian.config import AlertsSettings
from weijian.contract import CATALOGUE, Kind, MetricValue, Reading
from weijian.registry import load_registry
from weijian.rules import Rule, default_rule_packs

PACKS = default_rule_packs()
T0 = datetime(2026, 7, 14, 16, 0, tzinfo=UTC)  # 00:00 on 15 July in China


def pack_rule(kind: Kind, rule_id: str, **change: object) -> Rule:
    rule = next(r for r in PACKS[kind].rules if r.id == rule_id)
    return rule.model_copy(update={"enabled": True, **change})


def engine(kind: Kind, *rules: Rule) -> EngineState:
    dev = DeviceInfo("site-1", "dev-1", kind, "chengguan", "gw-1", rules)
    return EngineState(config=EngineConfig(devices={("site-1", "dev-1"): dev}))


def feed(state: EngineState, kind: Kind, series: list[tuple[float, dict[str, float]]]) -> list:
    """Readings at the given minutes after T0 (received at once), then a tick after each."""
    out = []
    for seq, (minute, values) in enumerate(series, start=1):
        at = T0 + timedelta(minutes=minute)
        metrics = {m: MetricValue(value=v, unit=CATALOGUE[kind][m]) for m, v in values.items()}
        reading = Reading(site_id="site-1", device_id="dev-1", gateway_id="gw-1", kind=kind, ts=at,
                          seq=seq, metrics=metrics)
        out += step(state, reading, at)[1]
        out += step(state, Tick(), at)[1]
    return out


def fired(out: list, rule_id: str) -> list:
    return [t for t in out if t.kind is TransitionKind.FIRING and t.alert.rule_id == rule_id]


def temperatures(excursions: list[tuple[float, float]], *, every: float = 5, until: float) -> list:
    """A fridge at 5 °C, read every ``every`` minutes, with (start, minutes) excursions to 9 °C."""
    out, minute = [], 0.0
    while minute <= until:
        hot = any(s <= minute < s + d for s, d in excursions)
        out.append((minute, {"temperature": 9.0 if hot else 5.0}))
        minute += every
    return out


# --- cumulative ------------------------------------------------------------------------------

CUMULATIVE = pack_rule(Kind.COLD_CHAIN, "cc-heat-cumulative-who", max=8.0, max_bound="not_above",
                       total_min=120, window_h=24)
# The single-event alarm on the same limit: > 8 °C for 10 h at a stretch (30-DTR style).
SINGLE = pack_rule(Kind.COLD_CHAIN, "cc-heat-sustained")


def test_short_excursions_that_add_up_inside_the_window_fire_the_cumulative_alarm_once() -> None:
    assert SINGLE.for_min > 40  # each excursion is shorter than the single-event hold
    state = engine(Kind.COLD_CHAIN, CUMULATIVE, SINGLE)
    # Four 40-minute excursions within 18 hours: 160 minutes above 8 °C, past the 120 allowed.
    out = feed(state, Kind.COLD_CHAIN,
               temperatures([(60, 40), (300, 40), (600, 40), (1000, 40)], until=20 * 60))
    assert fired(out, SINGLE.id) == []
    (alarm,) = fired(out, CUMULATIVE.id)
    # It fires during the third excursion, when the total reaches 120 minutes.
    assert alarm.at == T0 + timedelta(minutes=640)
    registry = load_registry(EXAMPLE_REGISTRY)
    d = Dispatch(registry, {CUMULATIVE.id: CUMULATIVE}, AlertsSettings())
    assert "24小时内高于8℃累计120分钟，限值累计120分钟" in describe(d, alarm)


def test_the_same_excursions_spread_so_that_no_window_reaches_the_limit_do_not_fire() -> None:
    state = engine(Kind.COLD_CHAIN, CUMULATIVE, SINGLE)
    day = 24 * 60
    # The same four excursions, one every 26 hours: any 24 h window holds at most 80 minutes.
    excursions = [(60 + i * (day + 120), 40) for i in range(4)]
    out = feed(state, Kind.COLD_CHAIN, temperatures(excursions, every=10, until=4 * day + 600))
    assert fired(out, CUMULATIVE.id) == [] and fired(out, SINGLE.id) == []


def test_the_accumulated_time_survives_a_takeover() -> None:
    state = engine(Kind.COLD_CHAIN, CUMULATIVE)
    feed(state, Kind.COLD_CHAIN, temperatures([(60, 40), (300, 40)], until=400))
    moved = engine(Kind.COLD_CHAIN, CUMULATIVE)
    restore(moved, snapshot(state))  # another process takes the partition over
    later = [(m + 405, v) for m, v in temperatures([(195, 40)], until=300)]  # a third one, at 600
    assert len(fired(feed(moved, Kind.COLD_CHAIN, later), CUMULATIVE.id)) == 1


# --- medical-waste dwell: every load followed until the store is emptied ----------------------

DWELL = pack_rule(Kind.MEDICAL_WASTE, "mw-not-collected")


def test_three_loads_in_a_week_one_left_50_hours_gives_exactly_one_alert_for_that_load() -> None:
    assert DWELL.window_h == 48
    state = engine(Kind.MEDICAL_WASTE, DWELL)
    series, hour = [], 0
    # (load at hour, collected after hours): 20 h, 50 h, 30 h; a reading every hour, a week.
    loads = [(10, 20), (40, 50), (110, 30)]
    for hour in range(7 * 24):
        loaded = [start for start, stay in loads if start <= hour < start + stay]
        weight = 0.0 if not loaded else 15.0 + 2.0 * (hour - loaded[0])  # rising as bags come in
        series.append((hour * 60, {"weight": weight}))
    out = feed(state, Kind.MEDICAL_WASTE, series)
    (alarm,) = fired(out, DWELL.id)
    assert alarm.alert.since == T0 + timedelta(hours=39)  # last seen empty just before load 2
    assert alarm.at == T0 + timedelta(hours=39 + 48)
    resolved = [t for t in out if t.kind is TransitionKind.RESOLVED and t.alert.rule_id == DWELL.id]
    assert [t.at for t in resolved] == [T0 + timedelta(hours=90)]  # emptied after 50 h


# --- pool equipment stopped -------------------------------------------------------------------

CIRCULATION = pack_rule(Kind.SWIMMING_POOL, "sp-circulation-off")


@pytest.mark.parametrize(("off_min", "fires"), [(250, True), (230, False)])
def test_pool_circulation_off_for_4h10_fires_and_for_3h50_does_not(off_min: int, fires: bool) -> None:
    state = engine(Kind.SWIMMING_POOL, CIRCULATION)
    series = [(m, {"circulation_on": 0.0 if 30 <= m < 30 + off_min else 1.0}) for m in range(0, 400, 5)]
    out = feed(state, Kind.SWIMMING_POOL, series)
    alarms = fired(out, CIRCULATION.id)
    assert bool(alarms) is fires
    if fires:
        assert alarms[0].at == T0 + timedelta(minutes=30 + 240)


# --- completeness ---------------------------------------------------------------------------

COMPLETE = pack_rule(Kind.COLD_CHAIN, "cc-data-completeness", expected_interval_min=10, min_share=0.9)


def test_a_day_with_too_few_readings_is_reported_after_it_ends_and_a_full_day_resolves_it() -> None:
    state = engine(Kind.COLD_CHAIN, COMPLETE)
    step(state, Tick(), T0 - timedelta(minutes=1))  # the watch begins the evening before day 1
    day = 24 * 60
    series = [(m, {"temperature": 5.0}) for m in range(0, day, 10)]  # day 1: all 144 readings
    series += [(m, {"temperature": 5.0}) for m in range(day, 2 * day, 10) if not day + 600 <= m < day + 900]
    series += [(m, {"temperature": 5.0}) for m in range(2 * day, 3 * day + 60, 10)]  # day 3: all
    out = feed(state, Kind.COLD_CHAIN, series)
    (alarm,) = fired(out, COMPLETE.id)
    assert alarm.alert.since == T0 + timedelta(days=1)  # day 2, 00:00 in China
    assert alarm.alert.value == pytest.approx(100 * (144 - 30) / 144, abs=0.1)  # 79.2 %
    resolved = [t for t in out if t.kind is TransitionKind.RESOLVED and t.alert.rule_id == COMPLETE.id]
    assert [t.at for t in resolved] == [T0 + timedelta(days=3)]  # day 3 was complete
    registry = load_registry(EXAMPLE_REGISTRY)
    d = Dispatch(registry, {COMPLETE.id: COMPLETE}, AlertsSettings())
    assert "07月16日数据完整率79.2%，限值不低于90%" in describe(d, alarm)
