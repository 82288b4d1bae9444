"""Threshold bands drawn on the kind dashboards, derived from the alert engine's rule packs.

One source of truth: the bands come only from ``weijian.rules`` (the packs in
``weijian/rulepacks/``). A kind's range rules are grouped by metric and by the site attributes
they apply to (finished vs tap water, refrigerated vs frozen stores); each group becomes one
panel whose thresholds are the rules' ``min``/``max`` values, coloured by the worst severity
a value in that region would breach.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.models.dashboard import Threshold

from weijian.contract import Kind
from weijian.rules import AppliesTo, Rule, RulePack, RuleType, Severity

__all__ = ["Variant", "metric_variants", "threshold_steps", "variant_label"]

_COLOURS = {Severity.INFO: "yellow", Severity.WARNING: "orange", Severity.CRITICAL: "red"}
_ATTRIBUTE_LABELS = {
    "finished": "出厂水",
    "tap": "末梢水",
    "refrigerated": "冷藏",
    "frozen": "冷冻",
    True: "小型集中式供水",
    False: "集中式供水",
}


@dataclass(frozen=True)
class Variant:
    """The range rules of one metric for one group of sites.

    Attributes:
        kind: the monitored kind.
        metric: the metric judged.
        applies_to: the site attributes of the group (empty: every site of the kind).
        rules: the range rules in force for that group, in pack order.
    """

    kind: Kind
    metric: str
    applies_to: AppliesTo
    rules: tuple[Rule, ...]

    @property
    def limits(self) -> frozenset[float]:
        """Every min and max of the group's rules: the values the panel must draw."""
        return frozenset(v for r in self.rules for v in (r.min, r.max) if v is not None)


def variant_label(applies_to: AppliesTo) -> str:
    """Chinese label of a site group (``出厂水``), empty for every site."""
    values = [v for v in applies_to.model_dump().values() if v is not None]
    return "、".join(_ATTRIBUTE_LABELS.get(v, str(v)) for v in values)


def metric_variants(pack: RulePack) -> dict[str, list[Variant]]:
    """Group a pack's range rules by metric, then by the site attributes they require.

    A rule for every site (empty ``applies_to``) joins each attribute group of its metric;
    a metric whose rules name no attributes has one group.
    """
    by_metric: dict[str, list[Rule]] = {}
    for rule in pack.rules:
        if rule.type is RuleType.RANGE and rule.metric is not None:
            by_metric.setdefault(rule.metric, []).append(rule)
    out: dict[str, list[Variant]] = {}
    for metric, rules in by_metric.items():
        groups: list[AppliesTo] = []
        for rule in rules:
            if rule.applies_to != AppliesTo() and rule.applies_to not in groups:
                groups.append(rule.applies_to)
        if not groups:
            groups = [AppliesTo()]
        out[metric] = [
            Variant(
                pack.kind,
                metric,
                group,
                tuple(r for r in rules if r.applies_to in (AppliesTo(), group)),
            )
            for group in groups
        ]
    return out


def _worst(rules: Sequence[Rule], x: float) -> Severity | None:
    breached = [
        r.severity for r in rules
        if (r.min is not None and x < r.min) or (r.max is not None and x > r.max)
    ]
    return max(breached, key=lambda s: s.rank) if breached else None


def threshold_steps(rules: Sequence[Rule]) -> list[Threshold]:
    """Grafana threshold steps: base colour, then one step at each limit, coloured by region.

    Grafana colours a value with the last step at or below it; each region between two
    limits takes the colour of the worst severity a value inside it breaches (green: none).
    """
    bounds = sorted({v for r in rules for v in (r.min, r.max) if v is not None})
    if not bounds:
        return [Threshold(value=None, color="green")]

    def colour(x: float) -> str:
        worst = _worst(rules, x)
        return "green" if worst is None else _COLOURS[worst]

    # Probe each region at its midpoint (below the first and above the last by one unit).
    probes = [bounds[0] - 1.0]
    probes += [(a + b) / 2 for a, b in itertools.pairwise(bounds)]
    probes.append(bounds[-1] + 1.0)
    steps = [Threshold(value=None, color=colour(probes[0]))]
    steps += [Threshold(value=b, color=colour(p)) for b, p in zip(bounds, probes[1:], strict=True)]
    return steps


def variants_by_kind(packs: Mapping[Kind, RulePack]) -> dict[Kind, dict[str, list[Variant]]]:
    """:func:`metric_variants` for every pack."""
    return {kind: metric_variants(pack) for kind, pack in packs.items()}
