"""The InfluxQL text of every panel, as pure functions of the schema in docs/contract.md.

Template variables stay as Grafana writes them (``$district``, ``$site``, ``$device``,
``$timeFilter``, ``$__interval``, ``${__to}``) so that one string serves Grafana and the
tests, which substitute them with :func:`dashboards.templating.substitute` and run the result
against a real InfluxDB. Absolute windows hang off ``${__to}`` (the end of the dashboard's
range), never off InfluxDB's ``now()``, so a replayed day shows what the desk saw that day.
"""

from __future__ import annotations

from typing import Final

from weijian.contract import ALERT_MEASUREMENT as _ALERT_MEASUREMENT
from weijian.contract import CATALOGUE, Kind

__all__ = [
    "ALERT_MEASUREMENT",
    "HEARTBEAT_METRIC",
    "KINDS_REGEX",
    "OPEN_ALERT_WINDOW",
    "alert_annotation",
    "completeness_by_district",
    "devices_variable",
    "districts_variable",
    "kind_metric_series",
    "last_report_by_site",
    "live_sites",
    "open_alert_count",
    "open_alert_list",
    "open_alerts_by_site",
    "site_metric_series",
    "sites_variable",
]

ALERT_MEASUREMENT: Final = _ALERT_MEASUREMENT
KINDS_REGEX: Final = "/^(" + "|".join(k.value for k in Kind) + ")$/"
# Every kind's catalogue has temperature and every instrument profile we ship measures it, so
# it is the field whose last point says when a device last reported (InfluxQL returns the
# point's own time only for a single selector, so "last(*)" would not do).
HEARTBEAT_METRIC: Final = "temperature"
assert all(HEARTBEAT_METRIC in metrics for metrics in CATALOGUE.values())
# An alert still open is one whose last state change in this window is not "resolved".
OPEN_ALERT_WINDOW: Final = "30d"

_ALL_KINDS_FILTER = '"district" =~ /^$district$/'
_OPEN_WINDOW = f"time > ${{__to}}ms - {OPEN_ALERT_WINDOW} AND time <= ${{__to}}ms"


def _latest_alert_states(where: str) -> str:
    # An alert's identity within the alert measurement's tags: one rule on one device.
    return (
        f'SELECT last("state") AS "state", last("message") AS "message", last("value") AS "value", '
        f'last("threshold") AS "threshold" FROM "{ALERT_MEASUREMENT}" WHERE {where} '
        f'GROUP BY "district", "site_id", "device_id", "kind", "rule", "severity"'
    )


def last_report_by_site() -> str:
    """Each site's last reading time in the range (table; the point time is the report)."""
    return (
        f'SELECT last("{HEARTBEAT_METRIC}") AS "last_temperature" FROM {KINDS_REGEX} '
        f'WHERE {_ALL_KINDS_FILTER} AND $timeFilter GROUP BY "district", "site_id"'
    )


def live_sites(silent_after_min: int) -> str:
    """Readings per site in the last ``silent_after_min`` minutes; absent means silent."""
    return (
        f'SELECT count("{HEARTBEAT_METRIC}") AS "recent_readings" FROM {KINDS_REGEX} '
        f"WHERE time > ${{__to}}ms - {silent_after_min}m AND time <= ${{__to}}ms "
        f'GROUP BY "site_id"'
    )


def open_alerts_by_site() -> str:
    """Open alerts per site (table)."""
    return (
        f'SELECT count("state") AS "open_alerts" FROM ({_latest_alert_states(_OPEN_WINDOW)}) '
        f"WHERE \"state\" <> 'resolved' GROUP BY \"site_id\""
    )


def open_alert_count() -> str:
    """The number of open alerts (stat)."""
    return (
        f'SELECT count("state") AS "open_alerts" FROM ({_latest_alert_states(_OPEN_WINDOW)}) '
        f"WHERE \"state\" <> 'resolved'"
    )


def open_alert_list() -> str:
    """Every open alert with its latest state, value and threshold (table)."""
    return (
        f'SELECT "state", "message", "value", "threshold" FROM ({_latest_alert_states(_OPEN_WINDOW)}) '
        f"WHERE \"state\" <> 'resolved' GROUP BY \"district\", \"site_id\", \"device_id\", \"rule\", "
        f'"severity"'
    )


def completeness_by_district(kind: Kind, expected_interval_s: float) -> str:
    """Percentage of the expected readings of ``kind`` received per district in the range.

    Each device should report once per ``expected_interval_s``: the panel divides the mean
    readings per device by ``$__range_s / expected_interval_s``. A device silent for the
    whole range has no series and is not counted (the site-state table shows it as silent).
    InfluxDB 1.x miscounts an outer aggregate over a ``fill(0)`` subquery that merges several
    series, so the slots are not filled; the count is divided by the expected number instead.
    """
    interval = f"{expected_interval_s:g}"
    return (
        f'SELECT mean("n") * 100 * {interval} / $__range_s AS "{kind.value}" FROM ('
        f'SELECT count("{HEARTBEAT_METRIC}") AS "n" FROM "{kind.value}" WHERE $timeFilter '
        f'GROUP BY "district", "site_id", "device_id") GROUP BY "district"'
    )


def daily_summary(kind: Kind, metric: str, where: str = "", expected_interval_s: float = 60.0,
                  name: str = "") -> str:
    """Per China day (UTC+8) and device: min and max of ``metric``, or hours matching ``where``.

    The Fridge-tag style daily view cold-chain staff read: the day's lowest and highest
    temperature and how long it was out of 2-8 °C. Hours are the matching readings times the
    expected reporting interval (each reading stands for one interval), so a device that
    reports every minute gives the time to the minute.
    """
    base = (f'FROM "{kind.value}" WHERE "district" =~ /^$district$/ AND "site_id" =~ /^$site$/ '
            f"{'AND ' + where + ' ' if where else ''}AND $timeFilter "
            f'GROUP BY time(1d, -8h), "site_id", "device_id"')
    if where:
        return f'SELECT count("{metric}") * {expected_interval_s:g} / 3600 AS "{name}" {base}'
    return f'SELECT min("{metric}") AS "min", max("{metric}") AS "max" {base}'


def kind_metric_series(kind: Kind, metric: str) -> str:
    """One metric of one kind, per site and device, for the kind's dashboard."""
    return (
        f'SELECT mean("{metric}") AS "{metric}" FROM "{kind.value}" '
        f'WHERE "district" =~ /^$district$/ AND "site_id" =~ /^$site$/ AND $timeFilter '
        f'GROUP BY time($__interval), "site_id", "device_id" fill(null)'
    )


def site_metric_series(kind: Kind, metric: str) -> str:
    """One metric of the chosen site and device, for the drill-down."""
    return (
        f'SELECT mean("{metric}") AS "{metric}" FROM "{kind.value}" '
        f'WHERE "site_id" =~ /^$site$/ AND "device_id" =~ /^$device$/ AND $timeFilter '
        f'GROUP BY time($__interval), "device_id" fill(null)'
    )


def alert_annotation() -> str:
    """Alert state changes of the chosen site, drawn as annotations."""
    return (
        f'SELECT "message", "state", "value", "threshold" FROM "{ALERT_MEASUREMENT}" '
        f'WHERE "site_id" =~ /^$site$/ AND $timeFilter'
    )


def districts_variable() -> str:
    """Values of ``$district``."""
    return f'SHOW TAG VALUES FROM {KINDS_REGEX} WITH KEY = "district"'


def sites_variable(kind: Kind | None = None) -> str:
    """Values of ``$site`` within the chosen district(s), optionally of one kind."""
    source = f'"{kind.value}"' if kind is not None else KINDS_REGEX
    return f'SHOW TAG VALUES FROM {source} WITH KEY = "site_id" WHERE "district" =~ /^$district$/'


def devices_variable() -> str:
    """Values of ``$device`` at the chosen site(s)."""
    return f'SHOW TAG VALUES FROM {KINDS_REGEX} WITH KEY = "device_id" WHERE "site_id" =~ /^$site$/'


def monthly_figure(field: str) -> str:
    """One figure of ``weijian report monthly`` (``report_monthly``) per district and month.

    The points are the report's own figures (docs/reports.md), one per district and month at
    the month's start, written by the report command: the dashboard and the report cannot
    disagree.
    """
    return (f'SELECT last("{field}") AS "{field}" FROM "report_monthly" '
            f"WHERE \"kind\" = 'all' AND \"district\" =~ /^$district$/ AND $timeFilter "
            f'GROUP BY time(1d), "district" fill(none)')


def monthly_table() -> str:
    """The latest month's figures per district and kind."""
    return ('SELECT last("compliance_pct") AS "compliance_pct", '
            'last("completeness_pct") AS "completeness_pct", '
            'last("valid_rate_pct") AS "valid_rate_pct", last("on_time_pct") AS "on_time_pct", '
            'last("alerts") AS "alerts", last("tasks") AS "tasks" FROM "report_monthly" '
            'WHERE "district" =~ /^$district$/ AND $timeFilter GROUP BY "district", "kind"')
