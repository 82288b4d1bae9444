"""The one backoff formula of every in-process retry: exponential, capped, then jittered.

The n-th retry (n = 1, 2, ...) waits ``min(cap_s, initial_s * 2**(n-1))`` scaled down by the
jitter: ``base * (1 - jitter * u)`` with ``u`` uniform in [0, 1). ``jitter = 1`` is AWS's "full
jitter" (anywhere in (0, base]), ``jitter = 0`` is plain doubling. The jitter only ever
*shortens* a wait, so no delay exceeds ``cap_s``.

Used by the gateway's poll backoff (no jitter: a device's cadence stays readable), ingest's
InfluxDB retries and broker reconnection (full jitter: many processes must not retry in step),
the alerts database retries and the notification outbox (``retry_jitter``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays for successive retries; :meth:`next` counts them, :meth:`reset` starts over.

    Args:
        initial_s: the first retry's delay before jitter.
        cap_s: no delay is longer.
        jitter: the fraction of each delay that is random, 0 to 1.
        rand: uniform [0, 1) numbers (injectable for tests).
    """

    initial_s: float
    cap_s: float
    jitter: float = 1.0
    rand: Callable[[], float] = random.random
    attempt: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.cap_s <= 0:
            raise ValueError(f"delays must be > 0, got {self.initial_s}, {self.cap_s}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within 0..1, got {self.jitter}")

    def delay(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (1-based), without counting it."""
        doublings = min(max(attempt - 1, 0), 64)  # 2**64 * initial is past any cap
        base = min(self.cap_s, self.initial_s * 2.0**doublings)
        return base * (1 - self.jitter * self.rand())

    def next(self) -> float:
        """Count one more retry and return its delay."""
        self.attempt += 1
        return self.delay(self.attempt)

    def reset(self) -> None:
        """Start over (after a success)."""
        self.attempt = 0
