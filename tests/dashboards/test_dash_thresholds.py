"""The thresholds drawn on each kind's panels equal the rule packs' limits (one source of truth)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dashboards.boards import BoardOptions, kind_dashboard, kind_uid, to_json
from dashboards.labels import METRIC_LABELS
from dashboards.limits import variant_label
from weijian.contract import Kind
from weijian.registry import Registry
from weijian.rules import DEFAULT_RULES_DIR, RuleType, load_rule_packs


def _drawn(board: dict[str, Any]) -> dict[str, set[float]]:
    out = {}
    for panel in board["panels"]:
        steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps")
        if steps is not None:
            assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line+area"
            out[panel["title"]] = {s["value"] for s in steps if s["value"] is not None}
    return out


def _expected(packs_dir: Path) -> dict[Kind, dict[str, set[float]]]:
    """Independently of dashboards.limits: each range rule's limits, by the panel it belongs on."""
    out: dict[Kind, dict[str, set[float]]] = {}
    for kind, pack in load_rule_packs(packs_dir).items():
        ranged = [r for r in pack.rules if r.type is RuleType.RANGE]
        for rule in ranged:
            assert rule.metric is not None
            groups = {r.applies_to for r in ranged if r.metric == rule.metric and variant_label(r.applies_to)}
            targets = [rule.applies_to] if variant_label(rule.applies_to) else sorted(groups, key=str)
            targets = targets or [rule.applies_to]
            for group in targets:
                label = variant_label(group)
                title = METRIC_LABELS[rule.metric] + (f"（{label}）" if label else "")
                out.setdefault(kind, {}).setdefault(title, set()).update(
                    v for v in (rule.min, rule.max) if v is not None
                )
    return out


def test_each_kind_draws_exactly_the_rule_packs_limits(boards: list[dict[str, Any]]) -> None:
    expected = _expected(DEFAULT_RULES_DIR)
    for kind in Kind:
        board = next(b for b in boards if b["uid"] == kind_uid(kind))
        assert _drawn(board) == expected.get(kind, {}), kind
    assert expected[Kind.DRINKING_WATER]["游离氯（出厂水）"] == {0.3, 2.0}  # GB 5749-2022 表2


def test_a_changed_rule_pack_changes_the_bands(tmp_path: Path, registry: Registry) -> None:
    packs_dir = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES_DIR, packs_dir)
    pack = packs_dir / "swimming_pool.toml"
    text = pack.read_text(encoding="utf-8")
    assert "max = 7.8" in text
    pack.write_text(text.replace("max = 7.8", "max = 7.9"), encoding="utf-8")
    packs = load_rule_packs(packs_dir)
    options = BoardOptions(registry=registry)
    board = to_json(kind_dashboard(Kind.SWIMMING_POOL, packs[Kind.SWIMMING_POOL], options))
    assert _drawn(board)["pH"] == {7.0, 7.9}
    assert _drawn(board) == _expected(packs_dir)[Kind.SWIMMING_POOL]


def test_band_colours_follow_severity(boards: list[dict[str, Any]]) -> None:
    board = next(b for b in boards if b["uid"] == kind_uid(Kind.COLD_CHAIN))
    panel = next(p for p in board["panels"] if p["title"] == "温度（冷藏）")
    steps = [(s["value"], s["color"]) for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    # 2-8 degC is green; above 8 and below 2 are critical excursions (vaccine storage rules).
    assert steps == [(None, "red"), (-0.5, "red"), (2.0, "green"), (8.0, "red")]
