"""Every range rule's limits as the standard words them (shared/domain/standards.md), checked
just inside, exactly at and just outside each limit, through the engine itself; and each alarm
quotes the limit it crossed, with its unit.

The WORDING table is written from the standards' text, not from the rule packs: a pack whose
bound disagrees with it fails here, and a range rule missing from the table fails too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.dispatch import Dispatch, describe
from alerts.engine import DeviceInfo, EngineConfig, EngineState, TransitionKind, step
from tests.alerts.conftest import EXAMPLE_REGISTRY
from weijian.config import AlertsSettings
from weijian.contract import CATALOGUE, Kind, MetricValue, Reading
from weijian.registry import load_registry
from weijian.rules import Rule, RuleType, default_rule_packs

PACKS = default_rule_packs()
T0 = datetime(2026, 7, 15, 0, 0, tzinfo=UTC)

# rule id -> ((limit, how the standard words compliance), ...), from standards.md:
# "≥" the limit itself complies (不低于), ">" it breaches (the alarm is "≤ x"), "≤" complies
# (不高于), "<" breaches (低于).
WORDING: dict[str, tuple[tuple[float, str], ...]] = {
    # GB 5749-2022 Table 2: finished ≥ 0.3, tap ≥ 0.05, upper ≤ 2 (total chlorine 0.5 / 0.05 / 3)
    "dw-free-chlorine-finished-low": ((0.3, "≥"),),
    "dw-free-chlorine-tap-low": ((0.05, "≥"),),
    "dw-free-chlorine-high": ((2.0, "≤"),),
    "dw-total-chlorine-finished-low": ((0.5, "≥"),),
    "dw-total-chlorine-tap-low": ((0.05, "≥"),),
    "dw-total-chlorine-high": ((3.0, "≤"),),
    # GB 5749-2022 Table 1: turbidity ≤ 1 (≤ 3 for small supplies), 6.5 ≤ pH ≤ 8.5
    "dw-turbidity-high": ((1.0, "≤"),),
    "dw-turbidity-small-supply-high": ((3.0, "≤"),),
    "dw-ph-range": ((6.5, "≥"), (8.5, "≤")),
    # GB 37488-2019: free chlorine 0.3–1.0, pH 7.0–7.8, turbidity ≤ 1, combined ≤ 0.4, urea ≤ 3.5,
    # cyanuric acid ≤ 50; ORP ≥ 650 (CJ 244-2007), temperature 23–30 ("宜")
    "sp-free-chlorine-low": ((0.3, "≥"),),
    "sp-free-chlorine-high": ((1.0, "≤"),),
    "sp-ph-range": ((7.0, "≥"), (7.8, "≤")),
    "sp-turbidity-high": ((1.0, "≤"),),
    "sp-combined-chlorine-high": ((0.4, "≤"),),
    "sp-urea-high": ((3.5, "≤"),),
    "sp-cyanuric-acid-high": ((50.0, "≤"),),
    "sp-orp-low": ((650.0, "≥"),),
    "sp-temperature-range": ((23.0, "≥"), (30.0, "≤")),
    # Vaccine storage 2–8 °C; frozen ≤ −20 °C; WHO freeze alarm "≤ −0.5 °C for 60 min"
    "cc-excursion-high": ((8.0, "≤"),),
    "cc-excursion-low": ((2.0, "≥"),),
    "cc-heat-sustained": ((8.0, "≤"),),
    "cc-freeze": ((-0.5, ">"),),
    "cc-frozen-high": ((-20.0, "≤"),),
    # 医疗废物集中处置技术规范 2.4.1–2.4.2: "< 20 °C"
    "mw-hot-storage": ((20.0, "<"),),
}

EPS = 1e-6


def range_rules() -> list[tuple[Kind, Rule]]:
    return [(k, r) for k, pack in PACKS.items() for r in pack.rules if r.type is RuleType.RANGE]


def test_every_range_rule_has_its_wording_in_the_table() -> None:
    assert {r.id for _, r in range_rules()} == set(WORDING)


def cases() -> list[tuple[str, float, bool]]:
    """(rule id, value, breaches?) just inside, at and just outside each limit."""
    out = []
    for rule_id, limits in WORDING.items():
        for limit, word in limits:
            lower = word in ("≥", ">")
            inside, outside = (limit + EPS, limit - EPS) if lower else (limit - EPS, limit + EPS)
            out += [(rule_id, inside, False), (rule_id, limit, word in (">", "<")), (rule_id, outside, True)]
    return out


def _judge(kind: Kind, rule: Rule, value: float) -> tuple[list, EngineState]:
    """Readings at ``value`` for the rule's hold time and a minute more, through step()."""
    enabled = rule.model_copy(update={"enabled": True})
    dev = DeviceInfo("site-1", "dev-1", kind, "chengguan", "gw-1", (enabled,))
    state = EngineState(config=EngineConfig(devices={("site-1", "dev-1"): dev}))
    out = []
    for minute in range(int(rule.for_min) + 2):
        reading = Reading(site_id="site-1", device_id="dev-1", gateway_id="gw-1", kind=kind,
                          ts=T0 + timedelta(minutes=minute), seq=minute + 1,
                          metrics={rule.metric: MetricValue(value=value, unit=CATALOGUE[kind][rule.metric])})
        out += step(state, reading, T0 + timedelta(minutes=minute))[1]
    return out, state


@pytest.mark.parametrize(("rule_id", "value", "breaches"), cases())
def test_a_value_at_a_limit_is_judged_as_the_standard_words_it(
    rule_id: str, value: float, breaches: bool
) -> None:
    kind, rule = next((k, r) for k, r in range_rules() if r.id == rule_id)
    out, _ = _judge(kind, rule, value)
    fired = [t for t in out if t.kind is TransitionKind.FIRING]
    assert bool(fired) is breaches, (rule_id, value)


@pytest.mark.parametrize(("rule_id", "value", "quoted"), [
    ("dw-ph-range", 6.1, "实测6.1，限值不低于6.5"),
    ("dw-ph-range", 9.0, "实测9，限值不高于8.5"),
    ("sp-free-chlorine-low", 0.1, "实测0.1mg/L，限值不低于0.3mg/L"),
    ("mw-hot-storage", 20.0, "实测20℃，限值低于20℃"),
    ("cc-freeze", -0.5, "实测-0.5℃，限值高于-0.5℃"),
])
def test_the_message_and_the_alert_event_carry_the_limit_crossed(
    rule_id: str, value: float, quoted: str
) -> None:
    kind, rule = next((k, r) for k, r in range_rules() if r.id == rule_id)
    out, _ = _judge(kind, rule, value)
    firing = next(t for t in out if t.kind is TransitionKind.FIRING)
    registry = load_registry(EXAMPLE_REGISTRY)
    d = Dispatch(registry, {r.id: r for pack in PACKS.values() for r in pack.rules}, AlertsSettings())
    assert quoted in describe(d, firing)
    low, high = WORDING[rule_id][0][0], WORDING[rule_id][-1][0]
    crossed = low if value <= low and rule.min is not None else high
    assert firing.alert.threshold == crossed
