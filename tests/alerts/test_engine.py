"""The pure engine: plain cases and hypothesis properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.engine import (
    Acknowledge,
    AddSilence,
    DeviceInfo,
    EngineConfig,
    EngineState,
    Silence,
    Tick,
    TransitionKind,
    step,
)
from weijian.contract import GatewayState, GatewayStatus, Kind, MetricValue, Reading
from weijian.rules import default_rule_packs

T0 = datetime(2026, 5, 12, 0, 0, tzinfo=UTC)
PACKS = default_rule_packs()


def rules(kind: Kind, *ids: str) -> tuple:
    return tuple(r for r in PACKS[kind].rules if r.id in ids)


TURB = rules(Kind.DRINKING_WATER, "dw-turbidity-high")[0]  # max 1.0, clear 0.8, 5 min
DEV = DeviceInfo("yc-water-002", "wq-01", Kind.DRINKING_WATER, "chengguan", "gw-1",
                 rules(Kind.DRINKING_WATER, "dw-turbidity-high", "dw-data-interruption"))
FRIDGE = DeviceInfo("yc-cc-001", "fr-01", Kind.COLD_CHAIN, "chengguan", "gw-1",
                    rules(Kind.COLD_CHAIN, "cc-data-interruption", "cc-freeze"))


def fresh() -> EngineState:
    return EngineState(config=EngineConfig(devices={("yc-water-002", "wq-01"): DEV,
                                                    ("yc-cc-001", "fr-01"): FRIDGE}))


def turbidity(minute: int, value: float, seq: int = 0) -> Reading:
    return Reading(site_id="yc-water-002", device_id="wq-01", gateway_id="gw-1", kind=Kind.DRINKING_WATER,
                   ts=T0 + timedelta(minutes=minute), seq=seq or minute,
                   metrics={"turbidity": MetricValue(value=value, unit="NTU")})


def run(state: EngineState, values: list[float], *, lag_min: float = 0) -> list:
    out = []
    for i, v in enumerate(values):
        now = T0 + timedelta(minutes=i + lag_min)
        _, ts = step(state, turbidity(i, v, i + 1), now)
        out += ts
    return out


def kinds(transitions: list) -> list[TransitionKind]:
    return [t.kind for t in transitions]


def test_sustained_breach_fires_after_for_min_and_resolves_inside_clear_band() -> None:
    out = run(fresh(), [0.3] + [2.0] * 7 + [0.9] * 3 + [0.5])
    assert kinds(out) == [TransitionKind.PENDING, TransitionKind.FIRING, TransitionKind.RESOLVED]
    assert out[1].at == T0 + timedelta(minutes=6)  # pending at 1, 5 minutes later
    assert out[2].at == T0 + timedelta(minutes=11)  # 0.9 is between clear 0.8 and limit 1.0: still open
    assert not out[1].late


def test_short_breach_is_cancelled_without_firing() -> None:
    assert kinds(run(fresh(), [2.0, 2.0, 0.5])) == [TransitionKind.PENDING, TransitionKind.CANCELLED]


def test_late_readings_fire_at_their_true_time_and_are_labelled() -> None:
    out = run(fresh(), [2.0] * 7, lag_min=120)  # replayed two hours late
    firing = next(t for t in out if t.kind is TransitionKind.FIRING)
    assert firing.late and firing.alert.late
    assert firing.at == T0 + timedelta(minutes=5)


def test_resent_readings_are_late_however_recent_they_are() -> None:
    # HJ 212-2025 RF=1 backlog arriving within seconds of its time is still not live data.
    state, out = fresh(), []
    for i in range(7):
        reading = turbidity(i, 2.0, i + 1).model_copy(update={"resent": True})
        out += step(state, reading, T0 + timedelta(minutes=i, seconds=5))[1]
    firing = next(t for t in out if t.kind is TransitionKind.FIRING)
    assert firing.late and firing.alert.late
    live = run(fresh(), [2.0] * 7)  # the same readings, not resent: live
    assert not next(t for t in live if t.kind is TransitionKind.FIRING).late


def test_acknowledged_alert_is_not_repeated_or_escalated() -> None:
    state = fresh()
    out = run(state, [2.0] * 7)
    alert = next(t for t in out if t.kind is TransitionKind.FIRING).alert
    _, esc = step(state, Tick(), T0 + timedelta(minutes=40))
    assert kinds(list(esc)) == [TransitionKind.ESCALATED] and esc[0].alert.level == 2
    _, ack = step(state, Acknowledge(alert.alert_id, "王建国"), T0 + timedelta(minutes=41))
    assert kinds(list(ack)) == [TransitionKind.ACKNOWLEDGED]
    _, later = step(state, Tick(), T0 + timedelta(hours=10))
    assert not [t for t in later if t.alert.alert_id == alert.alert_id]


@pytest.mark.parametrize(("start_h", "end_h", "device", "muted"), [
    (0, 1, "wq-01", True),  # the breach fires inside the silence's window, on its device
    (-2, -1, "wq-01", False),  # the window is over
    (1, 2, "wq-01", False),  # the window has not begun
    (0, 1, "wq-02", False),  # another device of the site
])
def test_silence_mutes_a_firing_only_inside_its_window_and_scope(
    start_h: int, end_h: int, device: str, muted: bool
) -> None:
    state = fresh()
    silence = Silence("s1", "yc-water-002", T0 + timedelta(hours=start_h), T0 + timedelta(hours=end_h),
                      "校准", "运维", device_id=device)
    step(state, AddSilence(silence), T0)
    firing = next(t for t in run(state, [2.0] * 7) if t.kind is TransitionKind.FIRING)
    assert firing.alert.silenced is muted


def test_gateway_offline_folds_device_interruptions_into_one_alert() -> None:
    state = fresh()
    step(state, Tick(), T0)
    _, off = step(state, GatewayStatus(gateway_id="gw-1", state=GatewayState.OFFLINE, ts=T0),
                  T0 + timedelta(minutes=1))
    assert [t.alert.rule_id for t in off if t.kind is TransitionKind.FIRING] == ["gateway-offline"]
    _, quiet = step(state, Tick(), T0 + timedelta(hours=3))
    assert not [t for t in quiet if t.kind is TransitionKind.FIRING]  # both devices silent 3 h
    _, on = step(state, GatewayStatus(gateway_id="gw-1", state=GatewayState.ONLINE,
                                      ts=T0 + timedelta(hours=3)), T0 + timedelta(hours=3))
    assert kinds(list(on)) == [TransitionKind.RESOLVED]


def test_data_interruption_fires_and_resolves_on_next_reading() -> None:
    state = fresh()
    step(state, turbidity(0, 0.3, 1), T0)
    step(state, Tick(), T0)
    _, out = step(state, Tick(), T0 + timedelta(minutes=61))
    fired = [t for t in out if t.kind is TransitionKind.FIRING]
    assert [t.alert.rule_id for t in fired] == ["dw-data-interruption", "cc-data-interruption"]
    _, back = step(state, turbidity(62, 0.3, 2), T0 + timedelta(minutes=62))
    assert kinds(list(back)) == [TransitionKind.RESOLVED]


values_in_band = st.floats(min_value=0.0, max_value=0.8, allow_nan=False)
any_values = st.floats(min_value=0.0, max_value=5.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(values_in_band, min_size=1, max_size=60))
def test_values_inside_the_clear_band_never_fire(values: list[float]) -> None:
    assert kinds(run(fresh(), values)) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(any_values, min_size=1, max_size=60), st.integers(min_value=0, max_value=180))
def test_replaying_the_same_events_gives_the_same_transitions(values: list[float], lag: int) -> None:
    base = fresh()
    first = run(base.copy(), values, lag_min=lag)
    second = run(base.copy(), values, lag_min=lag)
    assert first == second


@settings(max_examples=60, deadline=None)
@given(st.lists(any_values, min_size=1, max_size=80))
def test_at_most_one_open_alert_and_lifecycle_order(values: list[float]) -> None:
    state = fresh()
    out = run(state, values)
    # One device, one metric: at most one alert of each rule, and only one rule's limit on
    # turbidity can be crossed, so at most one alert in all.
    assert len(state.alerts) <= 1, state.alerts
    open_now = False
    for t in out:
        if t.kind is TransitionKind.FIRING:
            assert not open_now
            open_now = True
        elif t.kind is TransitionKind.RESOLVED:
            assert open_now
            open_now = False


def _takeover(state: EngineState) -> EngineState:
    """What a process taking a partition over rebuilds: open alerts from their rows, the rest
    from the saved snapshot (through JSON, as stored)."""
    import json
    from dataclasses import replace

    from alerts.engine import restore, snapshot

    heir = fresh()
    heir.alerts = {k: replace(a) for k, a in state.alerts.items()}
    restore(heir, json.loads(json.dumps(snapshot(state))))
    return heir


def _fridge(minute: int, value: float) -> Reading:
    return Reading(site_id="yc-cc-001", device_id="fr-01", gateway_id="gw-1", kind=Kind.COLD_CHAIN,
                   ts=T0 + timedelta(minutes=minute, microseconds=7), seq=1000 + minute,
                   metrics={"temperature": MetricValue(value=value, unit="degC")})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(any_values, st.floats(-3.0, 6.0)), min_size=2, max_size=90), st.data())
def test_a_takeover_with_redelivery_gives_the_transitions_of_one_uninterrupted_engine(
    values: list[tuple[float, float]], data: st.DataObject
) -> None:
    events: list[Reading | Tick] = []
    for i, (turb, temp) in enumerate(values):
        events += [turbidity(i, turb, i + 1), _fridge(i, temp), Tick()]

    def feed(state: EngineState, part: list[tuple[int, Reading | Tick]]) -> list[tuple[str, str, datetime]]:
        out = []
        for i, event in part:
            now = T0 + timedelta(minutes=i // 3, seconds=30)
            _, ts = step(state, event, now)
            out += [(t.kind.value, t.alert.alert_id, t.at) for t in ts]
        return out

    indexed = list(enumerate(events))
    whole = feed(fresh(), indexed)
    cut = data.draw(st.integers(1, len(events) - 1), label="cut")
    back = data.draw(st.integers(0, cut), label="redelivered from")
    first = fresh()
    before = feed(first, indexed[:cut])
    # The successor gets the unacknowledged readings again (not the ticks: those are its own).
    redelivered = [(i, e) for i, e in indexed[back:cut] if isinstance(e, Reading)]
    after = feed(_takeover(first), redelivered + indexed[cut:])
    assert before + after == whole


def test_merged_snapshots_keep_the_later_of_offline_and_back_online() -> None:
    from alerts.engine import restore

    old_layout = {"v": 1, "offline": {"gw-1": 60_000_000}}  # went offline at t=60 s
    new_layout = {"v": 1, "back_online": {"gw-1": 120_000_000}}  # came back at t=120 s
    state = fresh()
    for row in (old_layout, new_layout):
        restore(state, row)
    assert "gw-1" not in state.offline and "gw-1" in state.back_online
    again = fresh()
    restore(again, {"v": 1, "offline": {"gw-1": 180_000_000}, "back_online": {"gw-1": 120_000_000}})
    assert "gw-1" in again.offline  # offline again after it came back: still offline
