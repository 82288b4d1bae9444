"""The epoch of a partition's engine state: a former holder's late write is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from alerts.store import Store
from weijian.errors import PartitionLost

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def test_a_takeover_makes_the_former_holders_writes_fail_and_leaves_its_state(url: str) -> None:
    first, second = Store(url), Store(url)
    try:
        mine = first.take_over("8/8/p3", NOW)
        first.record([], [], [], now=NOW, state=("8/8/p3", '{"v": 1, "who": "first"}'), epoch=mine)
        theirs = second.take_over("8/8/p3", NOW)  # another process takes the partition over
        assert theirs == mine + 1
        with pytest.raises(PartitionLost):
            first.record([], [], [], now=NOW, state=("8/8/p3", '{"v": 1, "who": "late"}'), epoch=mine)
        assert second.engine_states()["8/8/p3"] == '{"v": 1, "who": "first"}'  # not overwritten
        second.record([], [], [], now=NOW, state=("8/8/p3", '{"v": 1, "who": "second"}'), epoch=theirs)
        assert first.engine_states()["8/8/p3"] == '{"v": 1, "who": "second"}'
        with first.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alerts_engine_state")).scalar_one() == 1
    finally:
        first.close()
        second.close()


def test_a_partition_without_a_row_of_its_own_starts_from_its_deployments_rows_only() -> None:
    from alerts.service import _earlier_layouts

    saved = {
        "county-a/8/8/p1": {"v": 1, "n": 1},  # this deployment, another layout
        "county-b/8/8/p1": {"v": 1, "n": 2},  # another deployment in the same database
        "8/8/p1": {"v": 1, "n": 3},  # written before deployments were told apart: an upgrade
        "county-ab/4/8/p0": {"v": 1, "n": 4},  # a name that only starts like this one
    }
    assert [r["n"] for r in _earlier_layouts(saved, "county-a/6/8/p1")] == [1, 3]
