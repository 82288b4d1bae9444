"""The signal models keep their physical promises over simulated days (run directly, fast)."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.events import Event, EventKind
from firmware_sim.scenario import load_scenario
from firmware_sim.signals import (
    ColdChainModel,
    ColdChainParams,
    DrinkingWaterModel,
    DrinkingWaterParams,
    MedicalWasteModel,
    MedicalWasteParams,
    SwimmingPoolModel,
    SwimmingPoolParams,
    build_model,
    local_hours,
    orp_mv,
)
from weijian.contract import Kind

DAY = 86400.0
# 2026-07-15 00:00 China Standard Time
START = 1784044800.0


def series(model, hours: float, step_s: float, events=(), start=START):
    return [(t, model.sample(t, events)) for t in _times(start, hours, step_s)]


def _times(start: float, hours: float, step_s: float):
    n = int(hours * 3600 / step_s)
    return [start + i * step_s for i in range(n + 1)]


def test_start_is_local_midnight():
    assert local_hours(START) == 0.0


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_fridge_stays_within_2_to_8_over_a_normal_day(seed: int):
    fridge = ColdChainModel(ColdChainParams(), seed)
    temps = [v["temperature"] for _, v in series(fridge, 24, 20)]
    assert min(temps) > 2.0 and max(temps) < 8.0
    # a sawtooth, not a flat line: the compressor cycles dozens of times a day
    crossings = sum(1 for a, b in itertools.pairwise(temps) if a < 4.5 <= b)
    assert crossings >= 30


def test_fridge_door_openings_show_as_short_warm_spikes():
    fridge = ColdChainModel(ColdChainParams(), 11)
    samples = series(fridge, 24, 5)
    opened = [t for t, v in samples if v["door_open"] == 1.0]
    assert opened, "no door opening in a working day"
    assert all(8 <= local_hours(t) < 18.1 for t in opened)
    assert len(opened) * 5 < 3600  # short: well under an hour open in total
    quiet = ColdChainModel(ColdChainParams(door_openings_per_day=0, door_spike_c=0.0), 11)
    t0 = opened[0]
    warmer = [fridge.sample(t)["temperature"] - quiet.sample(t)["temperature"] for t in (t0 + 60, t0 + 120)]
    assert max(warmer) > 0.3


@pytest.mark.parametrize(("cross_after_min", "seed"), [(90, 1), (150, 2), (240, 3)])
def test_mains_failure_crosses_8c_at_the_scenario_time(cross_after_min: float, seed: int):
    fridge = ColdChainModel(ColdChainParams(), seed)
    fail_at = START + 2 * 3600  # 02:00, at night
    events = [
        Event(
            EventKind.MAINS_FAILURE, fail_at, fail_at + 6 * 3600, params={"cross_after_min": cross_after_min}
        )
    ]
    samples = series(fridge, 1 + 6, 30, events, start=fail_at)
    first_over = next(t for t, v in samples if v["temperature"] > 8.0)
    assert abs((first_over - fail_at) / 60 - cross_after_min) <= 1.0
    assert all(v["power_ok"] == 0.0 for t, v in samples if t < fail_at + 6 * 3600)
    temps = [v["temperature"] for t, v in samples if t < fail_at + 6 * 3600]
    assert all(b >= a - 0.1 for a, b in itertools.pairwise(temps))  # warms steadily
    # after the power returns the compressor pulls it back into the band within hours
    back = fridge.sample(fail_at + 6 * 3600 + 3 * 3600, events)
    assert back["power_ok"] == 1.0 and 2.0 < back["temperature"] < 8.0


def test_bundled_mains_failure_scenario_crosses_8c_150_minutes_after_failure():
    scenario = load_scenario("cold-chain-mains-failure")
    events = scenario.events["yc-cc-001/fr-01"]
    (failure,) = events
    entry = scenario.devices[0]
    fridge = build_model(Kind.COLD_CHAIN, entry.params, 1, scenario.start_s)
    crossing = next(t for t in _times(failure.start_s, 5, 30) if fridge.sample(t, events)["temperature"] > 8)
    assert abs((crossing - failure.start_s) / 60 - 150) <= 1.0
    assert 0 <= local_hours(failure.start_s) < 6  # at night


def test_pool_orp_rises_with_free_chlorine_and_falls_with_ph():
    assert orp_mv(1.0, 7.4) > orp_mv(0.5, 7.4) > orp_mv(0.2, 7.4)
    assert orp_mv(0.7, 7.2) > orp_mv(0.7, 7.8)
    pool = SwimmingPoolModel(SwimmingPoolParams(bather_scale=1.4), 5)
    events = [Event(EventKind.DOSING_FAILURE, START + 11 * 3600, START + 18 * 3600)]
    samples = [v for _, v in series(pool, 24, 300, events)]
    fc = [v["free_chlorine"] for v in samples]
    orp = [v["orp"] for v in samples]
    assert statistics.correlation(fc, orp) > 0.9


def test_pool_bathers_consume_chlorine_and_raise_combined_chlorine_in_the_afternoon():
    pool = SwimmingPoolModel(SwimmingPoolParams(), 9)
    night = [pool.sample(START + h * 3600) for h in (2, 3, 4)]
    afternoon = [pool.sample(START + h * 3600) for h in (15.5, 16, 16.5)]
    assert (
        statistics.mean(v["free_chlorine"] for v in afternoon)
        < statistics.mean(v["free_chlorine"] for v in night) - 0.1
    )
    assert (
        statistics.mean(v["combined_chlorine"] for v in afternoon)
        > statistics.mean(v["combined_chlorine"] for v in night) + 0.1
    )
    day = [v for _, v in series(pool, 24, 300)]
    assert all(0.3 <= v["free_chlorine"] <= 1.0 for v in day)  # a normal day is compliant
    assert all(v["combined_chlorine"] <= 0.4 for v in day)


def test_bundled_pool_scenario_free_chlorine_drops_below_0_3_in_the_afternoon():
    scenario = load_scenario("pool-chlorine-low")
    entry = next(d for d in scenario.devices if d.site_id == "yc-pool-001")
    pool = build_model(Kind.SWIMMING_POOL, entry.params, 3, scenario.start_s)
    events = scenario.events[entry.key]
    low = [t for t in _times(scenario.start_s, 24, 300) if pool.sample(t, events)["free_chlorine"] < 0.3]
    assert low
    assert 12 <= local_hours(low[0]) < 16


def test_waste_weight_rises_through_the_day_and_drops_at_each_collection():
    store = MedicalWasteModel(MedicalWasteParams(), 4, START)
    collections = list(store.collections(START + 7 * DAY))
    gaps = {round((b - a) / 3600) for a, b in itertools.pairwise(collections)}
    assert gaps <= {24, 48} and len(collections) >= 4
    for c in collections[1:]:
        before = store.sample(c - 60)["weight"]
        after = store.sample(c + 1)["weight"]
        assert after < 2.5 < before
    # between collections the weight only grows (noise of a few grams aside)
    weights = [
        v["weight"] for t, v in series(store, 7 * 24, 600) if not any(c <= t < c + 600 for c in collections)
    ]
    drops = [a - b for a, b in itertools.pairwise(weights) if b < a - 0.5]
    assert len(drops) <= len(collections)


def test_missed_collection_keeps_the_weight_rising_for_three_days():
    scenario = load_scenario("waste-not-collected")
    entry = next(d for d in scenario.devices if d.site_id == "yc-mw-001")
    events = scenario.events[entry.key]
    store = build_model(Kind.MEDICAL_WASTE, entry.params, 5, scenario.start_s)
    daily = [store.sample(scenario.start_s + (d * 24 + 23) * 3600, events)["weight"] for d in range(4)]
    assert daily[0] < daily[1] < daily[2] < daily[3]
    assert daily[3] > 3 * 10 * 25 * 0.6  # three days of a large hospital's waste
    after = store.sample(scenario.start_s + (4 * 24 + 11) * 3600, events)["weight"]
    assert after < 30  # collected again on day 4


def test_drinking_water_chlorine_decays_between_doses_and_stays_compliant():
    water = DrinkingWaterModel(DrinkingWaterParams(), 3)
    period = 6 * 3600
    first_dose = math.ceil(START / period) * period
    for k in range(4):
        dose = first_dose + k * period
        early = water.sample(dose + 300)["free_chlorine"]
        late = water.sample(dose + period - 300)["free_chlorine"]
        assert early > late + 0.2
    day = [v for _, v in series(water, 24, 300)]
    assert all(0.3 <= v["free_chlorine"] <= 2.0 for v in day)
    assert all(v["total_chlorine"] > v["free_chlorine"] for v in day)
    assert all(6.5 <= v["ph"] <= 8.5 for v in day)


def test_drinking_water_temperature_follows_the_season():
    water = DrinkingWaterModel(DrinkingWaterParams(), 3)
    january = water.sample(START - 180 * DAY)["temperature"]
    july = water.sample(START)["temperature"]
    assert july - january > 12


def test_turbidity_spikes_are_rare_and_the_scenario_spike_exceeds_1_ntu():
    water = DrinkingWaterModel(DrinkingWaterParams(), 8)
    year = [water.sample(t, ())["turbidity"] for t in _times(START, 365 * 24, 1800)]
    over = sum(1 for ntu in year if ntu > 1.0) / len(year)
    assert 0 < over < 0.01
    scenario = load_scenario("water-turbidity-spike")
    entry = next(d for d in scenario.devices if d.site_id == "yc-water-002")
    tap = build_model(Kind.DRINKING_WATER, entry.params, 4, scenario.start_s)
    events = scenario.events[entry.key]
    peak = max(tap.sample(t, events)["turbidity"] for t in _times(scenario.start_s, 24, 120))
    assert 2.5 < peak < 3.5
    quiet = max(tap.sample(t, events)["turbidity"] for t in _times(scenario.start_s, 8.9, 300))
    assert quiet < 1.0


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(list(Kind)),
    seed=st.integers(0, 2**31),
    offset=st.floats(0, 400 * DAY),
)
def test_models_are_deterministic_and_finite(kind: Kind, seed: int, offset: float):
    a = build_model(kind, {}, seed, START)
    b = build_model(kind, {}, seed, START)
    t = START + offset
    va, vb = a.sample(t), b.sample(t)
    assert va == vb
    assert all(math.isfinite(v) for v in va.values())


def test_different_seeds_give_different_days():
    a = [v["temperature"] for _, v in series(ColdChainModel(ColdChainParams(), 1), 2, 60)]
    b = [v["temperature"] for _, v in series(ColdChainModel(ColdChainParams(), 2), 2, 60)]
    assert a != b
