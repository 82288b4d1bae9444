"""Substitute Grafana template variables in a query, the way Grafana's InfluxDB and SQL plugins do.

Grafana cannot run here, so the tests interpolate each panel's query with this function and run
the result against the real store. It covers the variables weijian's dashboards use: custom
ones (``$district``, ``$site``, ``$device``: multi-value ones become a regex alternation, as
Grafana formats them for InfluxQL regex matches, and :data:`ALL` becomes the ``.*`` allValue),
``$timeFilter``, ``$__timeFilter(col)``, ``$__interval``, ``$__range_s``,
``${__from}``/``${__to}`` and ``$__timeFrom()``/``$__timeTo()``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["ALL", "TimeRange", "UnresolvedVariable", "interval_for", "substitute"]

# The value of a variable set to "All": our variables' allValue, a regex matching anything.
ALL = "$__all"


class UnresolvedVariable(ValueError):
    """The query still names a variable no value was given for."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The dashboard's time range (aware datetimes)."""

    start: datetime
    end: datetime

    @property
    def from_ms(self) -> int:
        """Start in epoch milliseconds, as ``$__from``."""
        return int(self.start.timestamp() * 1000)

    @property
    def to_ms(self) -> int:
        """End in epoch milliseconds, as ``$__to``."""
        return int(self.end.timestamp() * 1000)


def interval_for(time_range: TimeRange, max_data_points: int = 1000, min_s: int = 10) -> str:
    """Grafana's ``$__interval``: range / data points, at least ``min_s``, in whole seconds."""
    span_s = (time_range.end - time_range.start).total_seconds()
    return f"{max(min_s, int(span_s // max_data_points))}s"


def _regex_value(values: Sequence[str]) -> str:
    escaped = [re.sub(r"([\\/.^$*+?()\[\]{}|-])", r"\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def substitute(
    query: str,
    time_range: TimeRange,
    variables: Mapping[str, Sequence[str]] | None = None,
    *,
    dialect: str = "influxql",
) -> str:
    """Interpolate ``query`` as Grafana would before sending it to the data source.

    Args:
        query: the panel's raw query.
        time_range: the dashboard's range.
        variables: values of the custom variables (``{"site": ["yc-water-001"]}``).
        dialect: ``"influxql"`` (regex-formatted values) or ``"sql"`` (quoted, comma-joined).

    Returns:
        The query ready to run.

    Raises:
        UnresolvedVariable: a ``$name`` is left with no value.
    """
    out = query
    if dialect == "influxql":
        time_filter = f"time >= {time_range.from_ms}ms AND time <= {time_range.to_ms}ms"
    else:
        time_filter = ""
    out = re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{_iso(time_range.start)}' AND '{_iso(time_range.end)}'",
        out,
    )
    out = out.replace("$__timeFrom()", f"'{_iso(time_range.start)}'")
    out = out.replace("$__timeTo()", f"'{_iso(time_range.end)}'")
    out = out.replace("$timeFilter", time_filter)
    out = out.replace("$__interval", interval_for(time_range))
    out = out.replace("$__range_s", str(int((time_range.end - time_range.start).total_seconds())))
    out = out.replace("${__from}", str(time_range.from_ms)).replace("${__to}", str(time_range.to_ms))
    given = dict(variables or {})

    def value_of(match: re.Match[str]) -> str:
        # One pass, so a value that itself contains "$" is never read as a variable.
        name = match.group(1) or match.group(2)
        values = given.get(name)
        if not values:
            raise UnresolvedVariable(f"${name} has no value in: {query}")
        if dialect == "influxql":
            return ".*" if list(values) == [ALL] else _regex_value(values)
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)

    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", value_of, out)
    return out
