"""The simulated clock: scenario time running at a speed factor, advanced by hand in tests."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["SimClock"]


class SimClock:
    """Simulated unix time = start + elapsed wall time * speed + manual advances.

    Args:
        start_s: simulated unix time at creation.
        speed: simulated seconds per wall second; 1440 passes a day in a minute; 0 stops
            time (it then moves only through :meth:`advance`).
        monotonic: the wall clock, injectable for tests.
    """

    def __init__(
        self, start_s: float, speed: float = 1.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.start_s = start_s
        self.speed = speed
        self._monotonic = monotonic
        self._wall0 = monotonic()
        self._advanced_s = 0.0

    def now(self) -> float:
        """Current simulated unix time (seconds)."""
        return self.start_s + (self._monotonic() - self._wall0) * self.speed + self._advanced_s

    def elapsed(self) -> float:
        """Simulated seconds since the start."""
        return self.now() - self.start_s

    def advance(self, seconds: float) -> None:
        """Jump forward by ``seconds`` of simulated time."""
        if seconds < 0:
            raise ValueError("the simulated clock does not run backwards")
        self._advanced_s += seconds

    def set_elapsed(self, seconds: float) -> None:
        """Jump to ``seconds`` after the start.

        Raises:
            ValueError: that moment has already passed.
        """
        self.advance(seconds - self.elapsed())
