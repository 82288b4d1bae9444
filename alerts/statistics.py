"""The figures a supervision institute reports: compliance, completeness, response (docs/reports.md).

Computed for a period (a China-time month by default) from InfluxDB and the tasks database,
per device, then summed per site, district and kind. InfluxDB does the counting
(``count()`` grouped by site and device, one request per kind with every statement in it):
no raw point is pulled into Python, so a month of a province costs a few requests per kind.

Definitions (each is in docs/reports.md, which is what the report's readers are given):

- a metric's **received** values: points with the metric's value or its flag;
  **valid** (有效): those with flag N (no ``<metric>_flag`` field) and a value;
  **flagged**: counted per letter (M, C, F, D, B, S, T);
- **compliance** (合格率) of a metric at a site: valid values meeting every limit in force for
  that metric there (the enabled, non-advisory range rules, site overrides applied, bounds as
  the standard words them) over valid values; overall: the same summed over the metrics;
  flagged values are excluded and counted separately;
- **completeness** (数据完整率) of a device: readings received (its most complete metric) over
  readings expected (the period over the device's ``interval_s``), at most 1;
  **valid-data rate** (有效率): valid values over received values, summed over its metrics;
- **alerts**: fired in the period, by rule and severity; **time in alarm**: the part of each
  alert's firing-to-resolution inside the period; **tasks**: created in the period; **on time**
  (处置及时率): closed by their due time, over those closed or already due by the period's end;
  time to claim and to close: median and 90th percentile; **escalations**: escalation entries
  of the period's tasks' audit trails;
- **risk score** (0-100) of a site, for the random inspection draw (双随机):
  ``40 x (1 - compliance) + 20 x (1 - completeness) + 20 x min(1, alerts / 5)
  + 20 x (1 - on time)``, where a figure that cannot be computed (no valid value, no task)
  counts as its worst for compliance and completeness and as 0 for the task term.
"""

from __future__ import annotations

import json
import re
import statistics as stats
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, select

from alerts.store import alerts_table, audit_table, tasks_table
from weijian.config import InfluxSettings
from weijian.contract import CATALOGUE, Kind
from weijian.influxql import query_many, quote_ident, quote_string
from weijian.registry import Registry, Site
from weijian.rules import Rule, RulePack, RuleType, rules_for_site

__all__ = ["FLAGS", "Period", "Report", "SiteFigures", "compute_report", "days_period", "month_period",
           "risk_score"]

CHINA = timezone(timedelta(hours=8))
FLAGS = ("M", "C", "F", "D", "B", "S", "T")
_ESCALATIONS = ("alert_escalated", "overdue_escalated")


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC, and its label."""

    start: datetime
    end: datetime
    label: str

    @property
    def seconds(self) -> float:
        """The period's length in seconds."""
        return (self.end - self.start).total_seconds()

    @property
    def month(self) -> str | None:
        """``YYYY-MM`` if the period is exactly one China-time calendar month, else None.

        Only such a period's figures are stored for Grafana (``report_monthly``, one point per
        month at its start): a shorter or longer period would overwrite a month's figures.
        """
        local = self.start.astimezone(CHINA)
        if (local.day, local.hour, local.minute, local.second, local.microsecond) != (1, 0, 0, 0, 0):
            return None
        label = f"{local.year:04d}-{local.month:02d}"
        return label if month_period(label) == Period(self.start, self.end, label) else None


_MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def month_period(month: str) -> Period:
    """A China-time calendar month, ``YYYY-MM``.

    Raises:
        ValueError: not ``YYYY-MM`` (exactly: four digits, a hyphen, two digits, a real month).
    """
    try:
        if not _MONTH.fullmatch(month):
            raise ValueError(month)
        year, mon = (int(part) for part in month.split("-"))
        start = datetime(year, mon, 1, tzinfo=CHINA)
    except ValueError as exc:
        raise ValueError(f"--month {month!r}: expected YYYY-MM, e.g. 2026-11") from exc
    end = datetime(year + (mon == 12), 1 if mon == 12 else mon + 1, 1, tzinfo=CHINA)
    return Period(start.astimezone(UTC), end.astimezone(UTC), f"{year}-{mon:02d}")


def days_period(first: str, after_last: str) -> Period:
    """China-time days ``[first, after_last)``, ``YYYY-MM-DD`` each (a quarter, a year...).

    Raises:
        ValueError: not dates (exactly ``YYYY-MM-DD``, a real day), or not in order.
    """
    days = []
    for option, value in (("--from", first), ("--to", after_last)):
        try:
            if not _DAY.fullmatch(value):
                raise ValueError(value)
            days.append(datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=CHINA))
        except ValueError as exc:
            raise ValueError(f"{option} {value!r}: expected a date YYYY-MM-DD, e.g. 2026-11-01") from exc
    start, end = days
    if end <= start:
        raise ValueError(f"--to {after_last} is not after --from {first}")
    return Period(start.astimezone(UTC), end.astimezone(UTC), f"{first}_{after_last}")


@dataclass
class MetricFigures:
    """One metric of one device: the counts behind its rates."""

    metric: str
    received: int = 0
    valid: int = 0
    flagged: Counter[str] = field(default_factory=Counter)
    judged: int = 0  # valid values judged against at least one limit (= valid when limits exist)
    exceeding: int = 0  # valid values outside a limit
    limits: str = ""  # the limits in force, as the report prints them

    @property
    def compliance(self) -> float | None:
        return (self.judged - self.exceeding) / self.judged if self.judged else None


@dataclass
class DeviceFigures:
    """One device over the period."""

    site_id: str
    device_id: str
    kind: Kind
    district: str
    expected: int
    metrics: dict[str, MetricFigures] = field(default_factory=dict)
    daily: dict[date, int] = field(default_factory=dict)  # China days: values of its first metric

    @property
    def received(self) -> int:
        return max((m.received for m in self.metrics.values()), default=0)

    @property
    def completeness(self) -> float:
        return min(1.0, self.received / self.expected) if self.expected else 0.0

    @property
    def valid_rate(self) -> float | None:
        received = sum(m.received for m in self.metrics.values())
        return sum(m.valid for m in self.metrics.values()) / received if received else None


@dataclass
class TaskFigures:
    """Tasks created in the period, of a site, district or the whole report."""

    created: int = 0
    closed_on_time: int = 0
    closed_late: int = 0
    open_overdue: int = 0
    open_not_due: int = 0
    escalations: int = 0
    claim_min: list[float] = field(default_factory=list)
    close_h: list[float] = field(default_factory=list)

    @property
    def on_time(self) -> float | None:
        due = self.closed_on_time + self.closed_late + self.open_overdue
        return self.closed_on_time / due if due else None

    def add(self, other: TaskFigures) -> None:
        for name in ("created", "closed_on_time", "closed_late", "open_overdue", "open_not_due",
                     "escalations"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.claim_min += other.claim_min
        self.close_h += other.close_h


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return stats.quantiles(sorted(values), n=100, method="inclusive")[int(q * 100) - 1]


def median(values: list[float]) -> float | None:
    """The median, or None."""
    return stats.median(values) if values else None


def p90(values: list[float]) -> float | None:
    """The 90th percentile (inclusive method), or None."""
    return _quantile(values, 0.9)


@dataclass
class SiteFigures:
    """A site's figures: its devices', its alerts' and its tasks'."""

    site: Site
    devices: list[DeviceFigures]
    alerts: int = 0
    alarm_h: float = 0.0
    tasks: TaskFigures = field(default_factory=TaskFigures)

    def _sum(self, attr: str) -> int:
        return sum(getattr(m, attr) for d in self.devices for m in d.metrics.values())

    @property
    def compliance(self) -> float | None:
        """Valid values within limits over valid values judged, all metrics pooled."""
        judged = self._sum("judged")
        return (judged - self._sum("exceeding")) / judged if judged else None

    @property
    def completeness(self) -> float:
        """Readings received over readings expected, the devices pooled."""
        expected = sum(d.expected for d in self.devices)
        return min(1.0, sum(d.received for d in self.devices) / expected) if expected else 0.0

    @property
    def valid_rate(self) -> float | None:
        """Valid values over received values, the devices and metrics pooled."""
        received = self._sum("received")
        return self._sum("valid") / received if received else None

    @property
    def risk(self) -> float:
        """:func:`risk_score` of these figures."""
        return risk_score(self.compliance, self.completeness, self.alerts, self.tasks.on_time)


def risk_score(compliance: float | None, completeness: float, alerts: int, on_time: float | None) -> float:
    """The documented risk score, 0 (no sign of trouble) to 100."""
    c = 0.0 if compliance is None else compliance
    t = 1.0 if on_time is None else on_time
    return round(40 * (1 - c) + 20 * (1 - completeness) + 20 * min(1.0, alerts / 5) + 20 * (1 - t), 1)


@dataclass
class Exceedance:
    """One alert fired in the period, with what was done about it."""

    alert_id: str
    site_id: str
    site_name: str
    district: str
    rule_id: str
    rule_title: str
    severity: str
    fired_at: datetime
    resolved_at: datetime | None
    value: float | None
    threshold: float | None
    task_id: int | None
    task_status: str | None
    assignee: str | None
    closed_at: datetime | None
    finding: str | None


@dataclass
class Report:
    """Everything the monthly report shows."""

    period: Period
    district: str | None
    sites: list[SiteFigures]
    exceedances: list[Exceedance]
    alerts_by_rule: Counter[tuple[str, str]]  # (rule id, severity) -> fired
    rule_titles: dict[str, str]

    @property
    def devices(self) -> list[DeviceFigures]:
        """Every device of the report."""
        return [d for s in self.sites for d in s.devices]

    def group(self, key: Callable[[SiteFigures], str]) -> dict[str, SiteFigures]:
        """Sites pooled by ``key`` (district, kind): the pooled figures behave as one site's."""
        out: dict[str, SiteFigures] = {}
        for s in self.sites:
            k = key(s)
            pooled = out.setdefault(k, SiteFigures(site=s.site, devices=[]))
            pooled.devices += s.devices
            pooled.alerts += s.alerts
            pooled.alarm_h += s.alarm_h
            pooled.tasks.add(s.tasks)
        return out

    @property
    def total(self) -> SiteFigures:
        """The whole report pooled as one site."""
        return self.group(lambda s: "all").get("all") or SiteFigures(site=None, devices=[])  # type: ignore[arg-type]


# --- gathering --------------------------------------------------------------------------------


def _breach(rule: Rule, metric: str) -> str | None:
    """The InfluxQL condition of a value outside ``rule``'s limits, as the standard words them."""
    m = quote_ident(metric)
    parts = []
    if rule.min is not None:
        parts.append(f"{m} <= {rule.min!r}" if rule.min_bound == "above" else f"{m} < {rule.min!r}")
    if rule.max is not None:
        parts.append(f"{m} >= {rule.max!r}" if rule.max_bound == "below" else f"{m} > {rule.max!r}")
    return " OR ".join(parts) or None


def _limit_text(rule: Rule) -> str:
    parts = []
    if rule.min is not None:
        parts.append(("＞" if rule.min_bound == "above" else "≥") + f"{rule.min:g}")
    if rule.max is not None:
        parts.append(("＜" if rule.max_bound == "below" else "≤") + f"{rule.max:g}")
    return "且".join(parts)


def limits_in_force(site: Site, packs: dict[Kind, RulePack]) -> dict[str, list[Rule]]:
    """Per metric, the compliance limits at ``site``: enabled, non-advisory range rules."""
    out: dict[str, list[Rule]] = defaultdict(list)
    for rule in rules_for_site(site, packs, site.overrides):
        if rule.type is RuleType.RANGE and rule.metric and not rule.advisory and rule.enabled:
            out[rule.metric].append(rule)
    return dict(out)


def _rows(series: list[dict[str, Any]]) -> Iterable[tuple[dict[str, str], dict[str, Any]]]:
    for s in series:
        tags = s.get("tags", {})
        for row in s["values"]:
            yield tags, dict(zip(s["columns"], row, strict=True))


def _n(row: dict[str, Any], key: str) -> int:
    """A count from InfluxDB (null where the group has none of that field)."""
    return int(row.get(key) or 0)


def _regex(values: Iterable[str]) -> str:
    return "/^(" + "|".join(sorted(values)) + ")$/"  # identifiers are [a-z0-9_-]: nothing to escape


async def gather_devices(influx: InfluxSettings, packs: dict[Kind, RulePack],
                         period: Period, sites: list[Site],
                         progress: Callable[[str], None] = lambda _: None,
                         ) -> dict[tuple[str, str], DeviceFigures]:
    """Count, in InfluxDB, every device's values, flags and exceedances over the period."""
    devices: dict[tuple[str, str], DeviceFigures] = {}
    by_kind: dict[Kind, list[tuple[Site, Any]]] = defaultdict(list)
    for site in sites:
        for d in site.devices:
            kind = d.kind or site.kind
            by_kind[kind].append((site, d))
            devices[(site.id, d.id)] = DeviceFigures(site.id, d.id, kind, site.district,
                                                     expected=int(period.seconds // d.interval_s))
    limits = {site.id: limits_in_force(site, packs) for site in sites}
    when = "__WHEN__"  # each chunk of the period puts its own time range here
    chunks = _chunks(period)
    for n, (kind, members) in enumerate(sorted(by_kind.items()), 1):
        progress(f"[{n}/{len(by_kind)}] {kind.value}: {len(members)} devices")
        measurement = quote_ident(kind.value)
        where_sites = f"site_id =~ {_regex({s.id for s, _ in members})}"
        metrics = sorted({m for _, d in members for m in d.metrics if m in CATALOGUE[kind]})
        statements: list[str] = []
        meaning: list[tuple[str, str, str | None]] = []  # (what, metric, letter or condition)
        group = 'GROUP BY "site_id", "device_id"'
        for metric in metrics:
            m, f = quote_ident(metric), quote_ident(metric + "_flag")
            statements.append(f"SELECT count({m}) AS v, count({f}) AS f FROM {measurement} "
                              f"WHERE {where_sites} AND {when} {group}")
            meaning.append(("counts", metric, None))
            statements.append(f"SELECT count({m}) AS vf FROM {measurement} WHERE {where_sites} "
                              f"AND {f} =~ /./ AND {when} {group}")
            meaning.append(("flagged_values", metric, None))
            for letter in FLAGS:
                statements.append(f"SELECT count({f}) AS n FROM {measurement} WHERE {where_sites} "
                                  f"AND {f} = {quote_string(letter)} AND {when} {group}")
                meaning.append(("flag", metric, letter))
            # Sites with the same limits for this metric share one pair of statements.
            conditions: dict[str, set[str]] = defaultdict(set)
            for site, d in members:
                rules = limits[site.id].get(metric, [])
                condition = " OR ".join(f"({c})" for c in (_breach(r, metric) for r in rules) if c)
                if metric in d.metrics and condition:
                    conditions[condition].add(site.id)
                    devices[(site.id, d.id)].metrics.setdefault(metric, MetricFigures(metric)).limits = \
                        "；".join(_limit_text(r) for r in rules)
            for condition, site_ids in conditions.items():
                scope = f"site_id =~ {_regex(site_ids)}"
                statements.append(f"SELECT count({m}) AS n FROM {measurement} WHERE {scope} "
                                  f"AND ({condition}) AND {when} {group}")
                meaning.append(("exceeding_all", metric, ",".join(sorted(site_ids))))
                statements.append(f"SELECT count({m}) AS n FROM {measurement} WHERE {scope} "
                                  f"AND ({condition}) AND {f} =~ /./ AND {when} {group}")
                meaning.append(("exceeding_flagged", metric, ",".join(sorted(site_ids))))
        # Completeness by day: each device's own first metric (its registry ``metrics[0]``), one
        # statement per distinct first metric, scoped to the devices that have it.
        by_first: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for site, d in members:
            own = [m for m in d.metrics if m in CATALOGUE[kind]]
            if own:
                by_first[own[0]].add((site.id, d.id))
        for first, keys in sorted(by_first.items()):
            scope = (f"site_id =~ {_regex({s for s, _ in keys})} "
                     f"AND device_id =~ {_regex({d for _, d in keys})}")
            statements.append(f"SELECT count({quote_ident(first)}) AS n FROM {measurement} WHERE {scope} "
                              f"AND {when} GROUP BY time(1d), \"site_id\", \"device_id\" tz('Asia/Shanghai')")
            meaning.append(("daily", first, ",".join(sorted(f"{s}/{d}" for s, d in keys))))
        for k, (start, end) in enumerate(chunks, 1):
            if len(chunks) > 1:
                progress(f"[{n}/{len(by_kind)}] {kind.value}: {start.astimezone(CHINA):%Y-%m-%d} "
                         f"({k}/{len(chunks)})")
            span = f"time >= '{start.isoformat()}' AND time < '{end.isoformat()}'"
            results = await query_many(influx, [st.replace(when, span) for st in statements])
            _add_counts(devices, meaning, results)
        for (site, d) in members:
            for metric in d.metrics:
                found = devices[(site.id, d.id)].metrics.get(metric)
                if found is not None and found.limits:
                    found.judged = found.valid
    return devices


def _chunks(period: Period) -> list[tuple[datetime, datetime]]:
    """The period in pieces of at most a China-time calendar month, one request each.

    A year of a province is twelve bounded requests, with progress between them.
    """
    out = []
    start = period.start
    while start < period.end:
        local = start.astimezone(CHINA)
        nxt = datetime(local.year + (local.month == 12), 1 if local.month == 12 else local.month + 1, 1,
                       tzinfo=CHINA).astimezone(UTC)
        out.append((start, min(nxt, period.end)))
        start = out[-1][1]
    return out


def _add_counts(devices: dict[tuple[str, str], DeviceFigures], meaning: list[tuple[str, str, str | None]],
                results: list[list[dict[str, Any]]]) -> None:
    """Add one request's counts to the devices' figures (counts of the period's pieces add up)."""
    for (what, metric, extra), series in zip(meaning, results, strict=True):
        # A daily statement is scoped by site and by device id: keep only its own devices'
        # groups (another device of one of those sites may have a different first metric).
        own = {tuple(k.split("/", 1)) for k in (extra or "").split(",")} if what == "daily" else None
        for tags, row in _rows(series):
            key = (tags.get("site_id", ""), tags.get("device_id", ""))
            dev = devices.get(key)
            if dev is None or (own is not None and key not in own):
                continue
            if what == "daily":
                if _n(row, "n"):
                    day = datetime.fromtimestamp(row["time"] / 1000, CHINA).date()
                    dev.daily[day] = dev.daily.get(day, 0) + _n(row, "n")
                continue
            mf = dev.metrics.setdefault(metric, MetricFigures(metric))
            if what == "counts":
                mf.received += _n(row, "v") + _n(row, "f")
                mf.valid += _n(row, "v")
            elif what == "flagged_values":
                mf.received -= _n(row, "vf")  # a value with a flag was counted twice
                mf.valid -= _n(row, "vf")
            elif what == "flag":
                mf.flagged[extra or ""] += _n(row, "n")
            elif what == "exceeding_all":
                mf.exceeding += _n(row, "n")
            elif what == "exceeding_flagged":
                mf.exceeding -= _n(row, "n")


def gather_tasks(engine: Engine, period: Period, sites: dict[str, Site],
                 rule_titles: dict[str, str]) -> tuple[dict[str, tuple[int, float]], dict[str, TaskFigures],
                                                      list[Exceedance], Counter[tuple[str, str]]]:
    """Alerts and tasks of the sites from the tasks database."""
    alerts: dict[str, tuple[int, float]] = {}
    by_rule: Counter[tuple[str, str]] = Counter()
    exceedances: list[Exceedance] = []
    with engine.connect() as conn:
        rows = conn.execute(select(alerts_table).where(
            alerts_table.c.site_id.in_(list(sites)), alerts_table.c.fired_at.is_not(None),
            alerts_table.c.fired_at < period.end)).mappings().all()
        task_rows = conn.execute(select(tasks_table).where(
            tasks_table.c.site_id.in_(list(sites)), tasks_table.c.created_at >= period.start,
            tasks_table.c.created_at < period.end)).mappings().all()
        task_by_alert = {t["alert_id"]: t for t in conn.execute(select(tasks_table).where(
            tasks_table.c.alert_id.in_([r["alert_id"] for r in rows]))).mappings().all()}
        audit = conn.execute(select(audit_table.c.task_id, audit_table.c.action, audit_table.c.at).where(
            audit_table.c.task_id.in_([t["id"] for t in task_rows]),
            audit_table.c.action.in_(_ESCALATIONS))).mappings().all()
    for r in rows:
        fired, resolved = _utc(r["fired_at"]), _utc(r["resolved_at"])
        assert fired is not None
        end = min(resolved or period.end, period.end)
        overlap_h = max(0.0, (end - max(fired, period.start)).total_seconds() / 3600)
        count, hours = alerts.get(r["site_id"], (0, 0.0))
        in_period = period.start <= fired < period.end
        alerts[r["site_id"]] = (count + in_period, hours + overlap_h)
        if not in_period:
            continue
        by_rule[(r["rule_id"], r["severity"])] += 1
        task = task_by_alert.get(r["alert_id"])
        evidence = json.loads(task["evidence"]) if task is not None and task["evidence"] else {}
        finding = task["finding"] if task is not None else None
        if finding and evidence.get("finding_text"):
            finding = f"{evidence['finding_text']}。{finding}"
        site = sites[r["site_id"]]
        exceedances.append(Exceedance(
            r["alert_id"], r["site_id"], site.name, site.district, r["rule_id"],
            rule_titles.get(r["rule_id"], r["rule_id"]), r["severity"], fired, resolved, r["value"],
            r["threshold"],
            task["id"] if task is not None else None, task["status"] if task is not None else None,
            task["assignee"] if task is not None else None,
            _utc(task["closed_at"]) if task is not None else None, finding))
    escalations = Counter(a["task_id"] for a in audit
                          if period.start <= (_utc(a["at"]) or period.end) < period.end)
    tasks: dict[str, TaskFigures] = defaultdict(TaskFigures)
    for t in task_rows:
        f = tasks[t["site_id"]]
        created, due = _utc(t["created_at"]), _utc(t["due_at"])
        claimed, closed = _utc(t["claimed_at"]), _utc(t["closed_at"])
        assert created is not None and due is not None
        f.created += 1
        f.escalations += escalations.get(t["id"], 0)
        if claimed is not None:
            f.claim_min.append((claimed - created).total_seconds() / 60)
        if closed is not None:
            f.close_h.append((closed - created).total_seconds() / 3600)
            if closed <= due:
                f.closed_on_time += 1
            else:
                f.closed_late += 1
        elif due < period.end:
            f.open_overdue += 1
        else:
            f.open_not_due += 1
    exceedances.sort(key=lambda e: e.fired_at)
    return alerts, dict(tasks), exceedances, by_rule


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def compute_report(influx: InfluxSettings, engine: Engine, registry: Registry,
                         packs: dict[Kind, RulePack], period: Period, district: str | None = None,
                         progress: Callable[[str], None] = lambda _: None) -> Report:
    """The report's figures for the period (and district).

    Raises:
        ValueError: the district is not in the registry.
        InfluxUnavailable: InfluxDB cannot be reached.
    """
    if district is not None and district not in registry.districts:
        known = ", ".join(sorted(registry.districts))
        raise ValueError(f"district {district!r} is not in the registry (known: {known})")
    sites = [s for s in registry.sites.values() if district is None or s.district == district]
    devices = await gather_devices(influx, packs, period, sites, progress)
    titles = {r.id: r.title for pack in packs.values() for r in pack.rules}
    progress("alerts and tasks")
    by_id = {s.id: s for s in sites}
    alerts, tasks, exceedances, by_rule = gather_tasks(engine, period, by_id, titles)
    out = []
    for site in sites:
        count, hours = alerts.get(site.id, (0, 0.0))
        own = [devices[(site.id, d.id)] for d in site.devices]
        out.append(SiteFigures(site=site, devices=own, alerts=count,
                               alarm_h=round(hours, 3), tasks=tasks.get(site.id, TaskFigures())))
    return Report(period, district, out, exceedances, by_rule, titles)
