"""The template-variable substitution the query tests rely on."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboards.templating import ALL, TimeRange, UnresolvedVariable, interval_for, substitute

DAY = TimeRange(datetime(2026, 7, 14, 16, tzinfo=UTC), datetime(2026, 7, 15, 16, tzinfo=UTC))


def test_influxql_variables_and_time() -> None:
    q = 'SELECT mean("ph") FROM "x" WHERE "site_id" =~ /^$site$/ AND $timeFilter GROUP BY time($__interval)'
    out = substitute(q, DAY, {"site": ["a-1", "b.2"]})
    assert "/^(a\\-1|b\\.2)$/" in out
    assert f"time >= {DAY.from_ms}ms AND time <= {DAY.to_ms}ms" in out
    assert "time(86s)" in out and interval_for(DAY) == "86s"  # a day over 1,000 points
    assert substitute("/^$site$/", DAY, {"site": [ALL]}) == "/^.*$/"


def test_sql_macros() -> None:
    out = substitute("WHERE $__timeFilter(created_at) AND due_at < $__timeTo() AND s IN ($s)", DAY,
                     {"s": ["o'k"]}, dialect="sql")
    assert out == ("WHERE created_at BETWEEN '2026-07-14T16:00:00Z' AND '2026-07-15T16:00:00Z' "
                   "AND due_at < '2026-07-15T16:00:00Z' AND s IN ('o''k')")


def test_a_variable_left_unresolved_is_an_error() -> None:
    with pytest.raises(UnresolvedVariable, match=r"\$device"):
        substitute('WHERE "device_id" =~ /^$device$/', DAY, {"site": ["a"]})
    with pytest.raises(UnresolvedVariable):
        substitute("$site", DAY, {"site": []})


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4))
def test_any_value_matches_itself_and_nothing_longer(values: list[str]) -> None:
    pattern = substitute("^$v$", TimeRange(DAY.start, DAY.start + timedelta(hours=1)), {"v": values})
    for value in values:
        assert re.fullmatch(pattern, value)
        assert not re.fullmatch(pattern, value + "x")
