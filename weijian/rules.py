"""Rule-pack schema: the limits every stage draws from national standards, and their loader.

The packs themselves are data (``weijian/rulepacks/<kind>.toml``, one per monitored kind); this
module is in the shared package because the alerts engine judges readings against them and
the dashboards draw the same limits, and a stage may not import another stage. Every rule
cites its standard, its clause and the confidence grade of the value (A/B/C as defined in
the project's standards reference); C-grade values ship disabled or advisory.

A site may override a rule's parameters in the registry (``[sites.overrides.<rule-id>]``);
:func:`check_override` validates such an entry and :func:`rules_for_site` gives the rules
in force at a site, overrides applied.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from weijian.contract import CATALOGUE, Kind
from weijian.errors import RulePackError, describe_validation

__all__ = [
    "DEFAULT_RULES_DIR",
    "OVERRIDABLE",
    "AppliesTo",
    "Grade",
    "Rule",
    "RulePack",
    "RulePackError",
    "RuleType",
    "Severity",
    "check_override",
    "default_rule_packs",
    "load_rule_packs",
    "rules_for_site",
]

# The packs ship beside the alerts stage; both packages install side by side.
DEFAULT_RULES_DIR: Final = Path(__file__).resolve().parent / "rulepacks"

_RULE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class RuleType(StrEnum):
    """What a rule watches. Each type's parameters are listed in ``docs/alerts.md``."""

    RANGE = "range"  # min/max, sustained for for_min, cleared inside clear_min/clear_max
    RATE_OF_CHANGE = "rate_of_change"  # |change| per per_min minutes above max_change
    DATA_INTERRUPTION = "data_interruption"  # no reading from the device for silent_min
    DEVICE_FAULT = "device_fault"  # a metric flagged D or B for for_min
    DOOR_OPEN = "door_open"  # door_open == 1 for for_min
    POWER_LOST = "power_lost"  # power_ok == 0 for for_min
    NOT_EMPTIED = "not_emptied"  # weight never at or below near_empty_kg for window_h
    CUMULATIVE = "cumulative"  # time outside min/max adds up to total_min within window_h
    EQUIPMENT_OFF = "equipment_off"  # a 0/1 equipment-state metric at 0 (off) for for_min
    COMPLETENESS = "completeness"  # a day's readings below min_share of 1440 / expected_interval_min


class Severity(StrEnum):
    """How bad an alert is; ordered, so ``Severity.rank`` compares them."""

    INFO = "info"  # advisory: recorded and shown, normally no task
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for critical."""
        return _RANK[self]


_RANK: Final = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class Grade(StrEnum):
    """Confidence grade of a limit (A: read in the standard, B: quoted, C: candidate)."""

    A = "A"
    B = "B"
    C = "C"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppliesTo(_Model):
    """Site attributes a rule requires; unset keys match every site."""

    water_point: Literal["finished", "tap"] | None = None
    small_supply: bool | None = None
    storage: Literal["refrigerated", "frozen"] | None = None


# Parameters a site may override, with the type each takes.
OVERRIDABLE: Final[Mapping[str, type]] = {
    "enabled": bool,
    "severity": str,
    "min": float,
    "max": float,
    "clear_min": float,
    "clear_max": float,
    "for_min": float,
    "max_change": float,
    "per_min": float,
    "silent_min": float,
    "near_empty_kg": float,
    "window_h": float,
    "expected_interval_min": float,
    "min_share": float,
}


class Rule(_Model):
    """One rule of a pack.

    Attributes:
        id: unique across all packs (``dw-free-chlorine-finished-low``).
        type: what the rule watches.
        title: what happened, in Chinese, for SMS and task titles (``游离氯低于限值``).
        metric: the metric judged (range, rate_of_change, device_fault: None means any).
        min: lower limit (range), compliant as ``min_bound`` words it.
        max: upper limit (range), compliant as ``max_bound`` words it.
        min_bound: ``at_least`` (不低于/≥: a value *below* min breaches, min itself complies) or
            ``above`` (高于/>: min itself breaches), as the standard words the lower limit.
        max_bound: ``not_above`` (不高于/≤: a value *above* max breaches, max itself complies) or
            ``below`` (低于/<: max itself breaches), as the standard words the upper limit.
        clear_min: an open alert clears only when the value is at or above this (hysteresis);
            defaults to ``min``.
        clear_max: ... and at or below this; defaults to ``max``.
        for_min: minutes the condition must hold before the alert fires (0: at once).
        max_change: rate_of_change: largest allowed absolute change per ``per_min`` minutes.
        per_min: rate_of_change: the window the change is expressed over.
        silent_min: data_interruption: minutes without a reading.
        near_empty_kg: not_emptied: a weight at or below this counts as emptied.
        window_h: not_emptied: hours the store may go without being emptied; cumulative: the
            rolling window the time outside the limits is added up over.
        total_min: cumulative: minutes outside the limits, in all, that fire the alarm.
        expected_interval_min: completeness: how often the device is expected to report.
        min_share: completeness: the share (0-1) of a day's expected readings below which the
            day is reported.
        severity: severity of the alert.
        min_recipients: the fewest people the standard wants texted at level 1 (the unit's
            handler and alarm contacts); ``weijian registry check`` fails a unit with fewer.
        enabled: disabled rules are loaded (and drawn) but never evaluated.
        advisory: shown as advice, not a compliance limit (C-grade values).
        standard: the document the limit comes from (``GB 5749-2022``).
        clause: the table or article (``表2``, ``第十七条``).
        grade: confidence grade of the value.
        note: anything an operator should know about the value.
        applies_to: site attributes required.
    """

    id: str = Field(pattern=_RULE_ID.pattern)
    type: RuleType
    title: str = Field(min_length=1)
    metric: str | None = None
    min: float | None = None
    max: float | None = None
    min_bound: Literal["at_least", "above"] = "at_least"
    max_bound: Literal["not_above", "below"] = "not_above"
    clear_min: float | None = None
    clear_max: float | None = None
    for_min: float = Field(0.0, ge=0)
    max_change: float | None = Field(None, gt=0)
    per_min: float = Field(60.0, gt=0)
    silent_min: float | None = Field(None, gt=0)
    near_empty_kg: float | None = Field(None, ge=0)
    window_h: float | None = Field(None, gt=0)
    total_min: float | None = Field(None, gt=0)
    expected_interval_min: float | None = Field(None, gt=0)
    min_share: float | None = Field(None, gt=0, le=1)
    severity: Severity = Severity.WARNING
    min_recipients: int = Field(1, ge=1)
    enabled: bool = True
    advisory: bool = False
    standard: str = Field(min_length=1)
    clause: str = Field(min_length=1)
    grade: Grade
    note: str = ""
    applies_to: AppliesTo = AppliesTo()

    @model_validator(mode="after")
    def _parameters_for_type(self) -> Rule:
        need: dict[RuleType, tuple[str, ...]] = {
            RuleType.RATE_OF_CHANGE: ("metric", "max_change"),
            RuleType.DATA_INTERRUPTION: ("silent_min",),
            RuleType.NOT_EMPTIED: ("near_empty_kg", "window_h"),
            RuleType.RANGE: ("metric",),
            RuleType.CUMULATIVE: ("metric", "total_min", "window_h"),
            RuleType.EQUIPMENT_OFF: ("metric",),
            RuleType.COMPLETENESS: ("expected_interval_min", "min_share"),
        }
        for key in need.get(self.type, ()):
            if getattr(self, key) is None:
                raise ValueError(f"key {key!r}: required for a {self.type.value} rule")
        if self.type is RuleType.CUMULATIVE:
            if self.min is None and self.max is None:
                raise ValueError("key 'min'/'max': a cumulative rule needs a limit")
            assert self.total_min is not None and self.window_h is not None
            if self.total_min > self.window_h * 60:
                raise ValueError("key 'total_min': more than the whole window_h")
        if self.type is RuleType.RANGE:
            if self.min is None and self.max is None:
                raise ValueError("key 'min'/'max': a range rule needs at least one limit")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"key 'min': {self.min} is above max {self.max}")
            if self.clear_min is not None and (self.min is None or self.clear_min < self.min):
                raise ValueError("key 'clear_min': must be at or above min (the clear band is inside)")
            if self.clear_max is not None and (self.max is None or self.clear_max > self.max):
                raise ValueError("key 'clear_max': must be at or below max (the clear band is inside)")
        return self

    def too_low(self, v: float) -> bool:
        """Whether ``v`` breaches the lower limit, as ``min_bound`` words it."""
        lo = self.min
        return lo is not None and (v <= lo if self.min_bound == "above" else v < lo)

    def too_high(self, v: float) -> bool:
        """Whether ``v`` breaches the upper limit, as ``max_bound`` words it."""
        hi = self.max
        return hi is not None and (v >= hi if self.max_bound == "below" else v > hi)

    def crossed(self, v: float) -> float | None:
        """The limit ``v`` breaches (min or max), or None if it complies."""
        if self.too_low(v):
            return self.min
        if self.too_high(v):
            return self.max
        return None

    def wording(self, limit: float | None) -> str:
        """How the standard words the side of ``limit``: ``不低于``, ``高于``, ``不高于``, ``低于``."""
        if limit is not None and limit == self.min and (self.max is None or limit != self.max):
            return "高于" if self.min_bound == "above" else "不低于"
        if limit is not None and limit == self.max:
            return "低于" if self.max_bound == "below" else "不高于"
        return ""

    @property
    def clear_low(self) -> float | None:
        """The lower edge of the clear band (``clear_min``, else ``min``)."""
        return self.clear_min if self.clear_min is not None else self.min

    @property
    def clear_high(self) -> float | None:
        """The upper edge of the clear band (``clear_max``, else ``max``)."""
        return self.clear_max if self.clear_max is not None else self.max

    @property
    def citation(self) -> str:
        """``GB 5749-2022 表2 (B)``: the standard, clause and grade, for messages."""
        return f"{self.standard} {self.clause} ({self.grade.value})"

    @property
    def limit(self) -> float | None:
        """The limit breached, for messages: max if set, else min, else the rule's number."""
        if self.type is RuleType.RANGE:
            return self.max if self.max is not None else self.min
        if self.type is RuleType.RATE_OF_CHANGE:
            return self.max_change
        if self.type is RuleType.NOT_EMPTIED:
            return self.window_h
        if self.type is RuleType.CUMULATIVE:
            return self.total_min
        if self.type is RuleType.COMPLETENESS:
            return None if self.min_share is None else self.min_share * 100
        if self.type is RuleType.DATA_INTERRUPTION:
            return self.silent_min
        return self.for_min

    def applies(self, site: _SiteLike) -> bool:
        """Whether the rule is meant for ``site`` (kind is checked by the caller)."""
        a = self.applies_to
        return (
            (a.water_point is None or (site.water_point is not None and site.water_point == a.water_point))
            and (a.small_supply is None or site.small_supply == a.small_supply)
            and (a.storage is None or (site.storage is not None and site.storage == a.storage))
        )


class RulePack(_Model):
    """The rules of one monitored kind: ``weijian/rulepacks/<kind>.toml``."""

    kind: Kind
    description: str = ""
    rules: tuple[Rule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _metrics_of_kind(self) -> RulePack:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule {rule.id!r}: duplicate id")
            seen.add(rule.id)
            if rule.grade is Grade.C and rule.enabled and not rule.advisory:
                # standards reference: C values are candidates, shipped disabled or advisory
                raise ValueError(
                    f"rule {rule.id!r}: key 'grade': a C-grade value must ship disabled or advisory"
                )
            if rule.metric is not None and rule.metric not in CATALOGUE[self.kind]:
                raise ValueError(
                    f"rule {rule.id!r}: key 'metric': {rule.metric!r} is not a metric of {self.kind.value}"
                )
        return self


class _SiteLike(Protocol):
    """What the rules need to know about a site (``weijian.registry.Site`` satisfies it)."""

    @property
    def kind(self) -> Kind: ...

    @property
    def water_point(self) -> Any: ...

    @property
    def small_supply(self) -> bool: ...

    @property
    def storage(self) -> Any: ...


def _load_pack(path: Path) -> RulePack:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulePackError(f"{path}: cannot read the rule pack: {exc.strerror}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RulePackError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return RulePack.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error, (key, msg) in zip(exc.errors(include_url=False), describe_validation(exc), strict=True):
            loc = list(error["loc"])
            where = ""
            if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
                raw = data.get("rules", [])[loc[1]]
                ident = raw.get("id") if isinstance(raw, dict) else None
                where = f"rules[{loc[1]}]" + (f" (id {ident!r})" if ident else "") + ": "
                key = ".".join(str(p) for p in loc[2:])
            if msg.startswith(("key ", "rule ")) or not key:
                lines.append(f"{path}: {where}{msg}")
            else:
                lines.append(f"{path}: {where}key {key!r}: {msg}")
        raise RulePackError("\n".join(lines)) from exc


def load_rule_packs(directory: Path = DEFAULT_RULES_DIR) -> dict[Kind, RulePack]:
    """Load every ``<kind>.toml`` pack in ``directory``.

    Raises:
        RulePackError: a file is unreadable or invalid, two packs claim one kind, a rule id
            repeats across packs, or the directory holds no pack.
    """
    packs: dict[Kind, RulePack] = {}
    ids: dict[str, Path] = {}
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise RulePackError(f"{directory}: no rule packs (*.toml) found")
    for path in files:
        pack = _load_pack(path)
        if pack.kind in packs:
            raise RulePackError(f"{path}: key 'kind': a second pack for {pack.kind.value}")
        for rule in pack.rules:
            if rule.id in ids:
                raise RulePackError(f"{path}: rule {rule.id!r}: id already used in {ids[rule.id]}")
            ids[rule.id] = path
        packs[pack.kind] = pack
    return packs


@cache
def default_rule_packs() -> Mapping[Kind, RulePack]:
    """The shipped packs, loaded once per process."""
    return load_rule_packs(DEFAULT_RULES_DIR)


def check_override(kind: Kind, rule_id: str, params: Mapping[str, Any],
                   packs: Mapping[Kind, RulePack] | None = None) -> list[str]:
    """Check one site override against the packs.

    Returns:
        Problems as ``key 'overrides.<rule>.<param>': ...`` sentences; empty if it is valid.
    """
    packs = default_rule_packs() if packs is None else packs
    pack = packs.get(kind)
    rule = next((r for r in pack.rules if r.id == rule_id), None) if pack else None
    if rule is None:
        known = ", ".join(r.id for r in pack.rules) if pack else "none"
        return [f"key 'overrides.{rule_id}': no such rule for kind {kind.value} (known: {known})"]
    problems = []
    for name, value in params.items():
        want = OVERRIDABLE.get(name)
        key = f"overrides.{rule_id}.{name}"
        if want is None:
            problems.append(f"key {key!r}: not an overridable parameter (one of {', '.join(OVERRIDABLE)})")
        elif want is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append(f"key {key!r}: must be a number, got {value!r}")
        elif want is bool and not isinstance(value, bool):
            problems.append(f"key {key!r}: must be true or false, got {value!r}")
        elif want is str and value not in Severity.__members__.values():
            problems.append(f"key {key!r}: must be one of {', '.join(Severity)}, got {value!r}")
    if not problems:
        try:
            _apply(rule, params)
        except ValidationError as exc:
            problems += [f"key 'overrides.{rule_id}': {msg}" for _, msg in describe_validation(exc)]
    return problems


def _apply(rule: Rule, params: Mapping[str, Any]) -> Rule:
    if not params:
        return rule
    data = rule.model_dump()
    data.update(params)  # the site's own authority: a C value may be enabled here
    return Rule.model_validate(data)


def rules_for_site(site: _SiteLike, packs: Mapping[Kind, RulePack],
                   overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[Rule]:
    """The enabled rules in force at ``site``, overrides applied, in pack order."""
    pack = packs.get(site.kind)
    if pack is None:
        return []
    out = []
    for rule in pack.rules:
        if not rule.applies(site):
            continue
        effective = _apply(rule, (overrides or {}).get(rule.id, {}))
        if effective.enabled:
            out.append(effective)
    return out
