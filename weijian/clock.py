"""The service clock: wall time in production, or a replayed day at a speed factor.

A replay (used by ``weijian demo`` and for training the duty desk) runs simulated time
``origin + (wall - anchor) * speed``. Every process of one replay gets the same
``[clock]`` section, so the simulator that stamps readings and the alert engine that
judges durations agree on what time it is, though they run in different processes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

__all__ = ["Clock", "ClockSettings"]


class ClockSettings(BaseModel):
    """``[clock]``: leave empty for wall time; set ``origin`` and ``anchor`` for a replay."""

    model_config = ConfigDict(extra="forbid")

    origin: AwareDatetime | None = None  # simulated time at the anchor
    anchor: AwareDatetime | None = None  # wall time at which simulated time was ``origin``
    speed: float = Field(1.0, gt=0)  # simulated seconds per wall second

    @model_validator(mode="after")
    def _both_or_neither(self) -> ClockSettings:
        if (self.origin is None) != (self.anchor is None):
            raise ValueError("key 'origin' and key 'anchor' go together (a replay needs both)")
        return self

    @property
    def is_replay(self) -> bool:
        """Whether this clock replays simulated time rather than telling wall time."""
        return self.origin is not None


class Clock:
    """Tell the time per :class:`ClockSettings`; ``now()`` is always timezone-aware UTC."""

    def __init__(self, settings: ClockSettings | None = None) -> None:
        self._settings = settings or ClockSettings()
        origin, anchor = self._settings.origin, self._settings.anchor
        self._origin_s = origin.timestamp() if origin else 0.0
        self._anchor_s = anchor.timestamp() if anchor else 0.0

    @property
    def speed(self) -> float:
        """Simulated seconds per wall second (1 for wall time)."""
        return self._settings.speed if self._settings.is_replay else 1.0

    def now(self) -> datetime:
        """The current time."""
        if not self._settings.is_replay:
            return datetime.now(UTC)
        simulated = self._origin_s + (time.time() - self._anchor_s) * self._settings.speed
        return datetime.fromtimestamp(simulated, UTC)

    def wall_seconds(self, simulated: timedelta) -> float:
        """How long a simulated span lasts on the wall clock (for sleeping between ticks)."""
        return simulated.total_seconds() / self.speed
