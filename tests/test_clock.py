"""The service clock: wall time by default, a replayed day when [clock] says so."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from weijian.clock import Clock, ClockSettings
from weijian.config import load_settings
from weijian.errors import ConfigError


def test_wall_clock_by_default() -> None:
    before = datetime.now(UTC)
    now = Clock().now()
    assert before <= now <= datetime.now(UTC)
    assert now.tzinfo is UTC


def test_replay_runs_from_origin_at_speed() -> None:
    origin = datetime(2026, 7, 15, tzinfo=UTC)
    clock = Clock(ClockSettings(origin=origin, anchor=datetime.now(UTC), speed=1440))
    first = clock.now()
    time.sleep(0.05)
    second = clock.now()
    assert origin <= first < origin + timedelta(seconds=60)
    # 50 ms of wall time at 1440x is at least 72 simulated seconds
    assert second - first >= timedelta(seconds=70)
    assert clock.wall_seconds(timedelta(minutes=1)) == pytest.approx(60 / 1440)


def test_replay_needs_origin_and_anchor(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[clock]\norigin = 2026-07-15T00:00:00+08:00\n")
    with pytest.raises(ConfigError, match=r"origin.*anchor"):
        load_settings(path)
