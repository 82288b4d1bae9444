"""Acceptance of issue 6 through the real pipeline: each firmware_sim scenario run by
``weijian demo`` (simulator -> gateway -> Mosquitto -> ingest -> alert engine -> SQLite tasks,
SMS inbox, InfluxDB) gives exactly the expected alerts, one task each, one firing SMS per
recipient, no repeat inside the repeat interval, and resolution inside the clear band.

Everything is read from the outside after the demo exited: tasks.sqlite, sms.jsonl and the
InfluxDB data directory. tests/alerts/test_scenarios_e2e.py checks the same expectations by
feeding the alert service directly.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.scenario import load_scenario
from tests.alerts.test_scenarios_e2e import SCENARIOS
from tests.e2e.conftest import DemoRun, run_demo
from weijian.registry import load_registry
from weijian.rules import Rule, RuleType, default_rule_packs, rules_for_site

REPEAT_INTERVAL = timedelta(minutes=240)  # alerts.repeat_interval_min's default, used by the demo
Key = tuple[str, str, str]  # (site_id, device_id, rule)


@dataclass(frozen=True)
class Pace:
    """How fast and how long to run a scenario: the whole story must fit."""

    speed: float
    duration_s: float


# duration_s >= duration_h * 3600 / speed + a few seconds. The demo polls every simulated six
# minutes but never faster than every 0.1 wall seconds. At 14400x that is 24 simulated minutes
# between polls, and with ingest's batch wait (then 0.2 wall s, 48 simulated minutes) the
# 60-minute data-interruption rule fired falsely, again and again. At 7200x polls are 12
# simulated minutes apart and a wall-clock hiccup of a third of a second is still harmless.
PACES = {
    "cold-chain-mains-failure": Pace(1440, 34),  # 12 h
    "pool-chlorine-low": Pace(2880, 34),  # 24 h
    "water-turbidity-spike": Pace(2880, 34),  # 24 h
    "waste-not-collected": Pace(7200, 64),  # 120 h
    "device-silent": Pace(2880, 34),  # 24 h
}

# The same expectations as the alert service's own acceptance test, with one addition: that
# test leaves a silent device out of the sample, but a real gateway publishes a reading flagged
# B (communication failure, values null) for every poll that gets no answer. Those readings are
# not data (dw-data-interruption fires an hour after the last answer, as there), and flagged B
# for 15 minutes they rightly raise dw-device-fault as well: two alerts, two tasks.
EXPECTED: dict[str, set[Key]] = SCENARIOS | {
    "device-silent": SCENARIOS["device-silent"] | {("xh-water-001", "wq-01", "dw-device-fault")},
}


def test_every_scenario_has_a_pace_that_fits_its_story() -> None:
    assert set(PACES) == set(EXPECTED)
    for name, pace in PACES.items():
        duration_h = load_scenario(name).duration_h
        assert duration_h is not None, name
        assert pace.duration_s >= duration_h * 3600 / pace.speed + 3, name


def actionable(run: DemoRun) -> list[dict[str, Any]]:
    """Alerts that fired and page someone (advisory ``info`` alerts page nobody)."""
    return [a for a in run.alerts if a["fired_at"] is not None and a["severity"] != "info"]


def key(row: dict[str, Any]) -> Key:
    return row["site_id"], row["device_id"], row.get("rule_id") or row["rule"]


def effective_rules(registry_path: Path) -> dict[tuple[str, str], Rule]:
    """(site_id, rule id) -> the rule in force there, site overrides applied."""
    registry = load_registry(registry_path)
    packs = default_rule_packs()
    return {(site.id, rule.id): rule for site in registry.sites.values()
            for rule in rules_for_site(site, packs, site.overrides)}


def readings(run: DemoRun, fired: dict[str, Any], metric: str, end_ns: int) -> list[tuple[int, float]]:
    """(time ns, value) of one metric of the alert's device from firing to ``end_ns``, as stored."""
    return sorted((p["time"], p[metric]) for p in run.points[fired["kind"]]
                  if p["site_id"] == fired["site_id"] and p["device_id"] == fired["device_id"]
                  and fired["time"] <= p["time"] <= end_ns and p.get(metric) is not None)


def assert_cleared_inside_the_band(run: DemoRun, rule: Rule, fired: dict[str, Any],
                                   resolved: dict[str, Any]) -> None:
    """The alert resolved at the first reading back inside the clear band, not before."""
    assert rule.metric is not None
    points = readings(run, fired, rule.metric, resolved["time"])
    assert points and points[-1][0] == resolved["time"], (rule.id, points[-3:], resolved)

    def inside(v: float) -> bool:
        return ((rule.clear_low is None or v >= rule.clear_low)
                and (rule.clear_high is None or v <= rule.clear_high))

    assert inside(points[-1][1]), (rule.id, points[-1], rule.clear_low, rule.clear_high)
    assert not any(inside(v) for _, v in points[:-1]), (rule.id, points)


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_scenario_through_the_pipeline(scenario: str, tmp_path: Path) -> None:
    pace = PACES[scenario]
    run = run_demo(scenario, tmp_path / "demo", speed=pace.speed, duration_s=pace.duration_s)
    assert run.returncode == 0, run.output + run.logs()
    # Every message a gateway published was taken: none refused (a reading stamped on another
    # clock than the replay's would be quarantined as from the future, and its alert lost).
    assert not run.quarantined, [(q["reason"], q["detail"]) for q in run.quarantined[:5]]
    expected = EXPECTED[scenario]
    clock = json.loads((run.workdir / "endpoints.json").read_text())["clock"]
    origin = datetime.fromisoformat(clock["origin"])
    duration_h = load_scenario(scenario).duration_h or 0

    # Exactly the expected alerts fired, each once (no flapping), from live data.
    alerts = actionable(run)
    assert Counter(map(key, alerts)) == Counter(expected), (
        [(key(a), a["since"], a["fired_at"], a["resolved_at"]) for a in alerts], run.logs())
    assert not [a for a in alerts if a["late"]], "live readings were judged late"

    # The same in InfluxDB's alert measurement: one firing and one resolved event each.
    events = [e for e in run.events if e["severity"] != "info"]
    assert Counter(key(e) for e in events if e["state"] == "firing") == Counter(expected), events
    assert Counter(key(e) for e in events if e["state"] == "resolved") == Counter(expected), events
    assert {e["alert_id"] for e in events} == {a["alert_id"] for a in alerts}

    # One open task per alert.
    assert Counter(map(key, run.tasks)) == Counter(expected), run.tasks
    assert {t["alert_id"] for t in run.tasks} == {a["alert_id"] for a in alerts}
    assert all(t["title"].startswith("巡查核查：") and t["status"] == "open" for t in run.tasks)

    # One firing SMS per alert to each level-1 person: the unit's handler and its alarm contacts
    # (a message grouping several alerts of one cause counts for each of them) ...
    registry = load_registry(run.workdir.parent / f"{scenario}-registry.toml")
    level1 = {a["alert_id"]: registry.units[registry.sites[a["site_id"]].unit].first_level_phones
              for a in alerts}
    handler = {alert_id: phones[0] for alert_id, phones in level1.items()}
    firing = Counter((alert_id, m["to"]) for m in run.sms if m["reason"] == "firing"
                     for alert_id in (m.get("alert_ids") or [m["alert_id"]]))
    assert firing == Counter((a, p) for a, phones in level1.items() for p in phones), (firing, level1)
    # ... and nobody told twice about one alert inside the repeat interval (a task's SLA
    # running out is another message: task_overdue).
    told: dict[tuple[str, str], list[datetime]] = {}
    for m in run.sms:
        assert m["alert_id"] in handler, m
        if m["reason"] != "task_overdue":
            told.setdefault((m["alert_id"], m["to"]), []).append(datetime.fromisoformat(m["at"]))
    for who, stamps in told.items():
        stamps.sort()
        assert all(b - a >= REPEAT_INTERVAL for a, b in itertools.pairwise(stamps)), (who, stamps)

    # Resolution inside the story, and for range rules once the value is back in the clear band.
    rules = effective_rules(run.workdir.parent / f"{scenario}-registry.toml")
    end = origin + timedelta(hours=duration_h)
    for alert in alerts:
        assert alert["state"] == "resolved", alert
        by_state = {e["state"]: e for e in events if e["alert_id"] == alert["alert_id"]}
        fired, resolved = by_state["firing"], by_state["resolved"]
        assert origin.timestamp() * 1e9 <= fired["time"] < resolved["time"] <= end.timestamp() * 1e9
        rule = rules[(alert["site_id"], alert["rule_id"])]
        if rule.type is RuleType.RANGE:
            assert_cleared_inside_the_band(run, rule, fired, resolved)

