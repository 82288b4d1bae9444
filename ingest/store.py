"""Storage policy above the writer seam: retry with backoff and jitter, spool while InfluxDB is down.

:meth:`Storage.store` returns once a batch is durable: written to InfluxDB or committed to the
spool. While the spool holds anything, new batches go behind it so InfluxDB gets them oldest
first; a drain task empties it when InfluxDB answers again. A full spool makes ``store`` wait,
which stops acknowledgements, so the broker keeps the rest: nothing is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from ingest.metrics import IngestMetrics
from ingest.spool import PointSpool
from weijian.backoff import Backoff
from weijian.errors import InfluxRejected, InfluxUnavailable

__all__ = ["InfluxWriter", "Storage"]

log = logging.getLogger(__name__)


class InfluxWriter(Protocol):
    """The seam: one batch of line protocol in, or a InfluxError out."""

    async def write(self, body: bytes) -> None:
        """Write one batch."""

    async def aclose(self) -> None:
        """Release connections."""


class Storage:
    """Write batches through a writer, with retries and the spool."""

    def __init__(
        self,
        writer: InfluxWriter,
        spool: PointSpool,
        metrics: IngestMetrics,
        *,
        retries: int,
        backoff_max_s: float,
        on_rejected: Callable[[bytes, str], Awaitable[None]],
        rng: random.Random | None = None,
    ) -> None:
        self._writer = writer
        self._spool = spool
        self._metrics = metrics
        self._retries = retries
        self._on_rejected = on_rejected
        self._backoff = Backoff(0.1, backoff_max_s, jitter=1.0, rand=(rng or random.Random()).random)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self.is_healthy = True
        self._unavailable_detail = ""  # the cause last logged while InfluxDB is unavailable

    def _delay(self, attempt: int) -> float:
        """Full-jitter backoff after ``attempt`` earlier tries (0.1 s doubling, capped)."""
        return self._backoff.delay(attempt + 1)

    async def _write(self, body: bytes, points: int) -> None:
        started = time.perf_counter()
        await self._writer.write(body)
        self._metrics.write_latency.observe(time.perf_counter() - started)
        self._metrics.stored.inc(points)

    async def store(self, body: bytes, points: int) -> None:
        """Make one batch durable: in InfluxDB, or else in the spool (waits while the spool is full)."""
        self._metrics.batch_size.observe(points)
        if self._spool.points == 0 and self.is_healthy:
            for attempt in range(self._retries + 1):
                try:
                    await self._write(body, points)
                    return
                except InfluxRejected as exc:
                    await self._rejected(body, str(exc))
                    return
                except InfluxUnavailable as exc:
                    if attempt == self._retries:
                        self._set_health(False, str(exc))
                    else:
                        await asyncio.sleep(self._delay(attempt))
        while not self._spool.has_room(points):
            self._room.clear()
            log.warning("spool.full", extra={"points": self._spool.points})
            await self._room.wait()
        await self._spool.append(body, points)
        self._metrics.spool_depth.set(self._spool.points)
        self._wake.set()

    async def _rejected(self, body: bytes, detail: str) -> None:
        log.error("store.rejected", extra={"detail": detail, "bytes": len(body)})
        self._metrics.store_rejected.inc()
        await self._on_rejected(body, detail)

    def _set_health(self, healthy: bool, detail: str = "") -> None:
        """Log changes, not repetitions: entering the state, leaving it, and a different cause.

        The cause may change while InfluxDB stays unavailable (a missing database, then a
        connection refused while the operator restarts it): each new one is an error of its own.
        """
        if healthy:
            if not self.is_healthy:
                self.is_healthy = True
                self._unavailable_detail = ""
                log.info("influx.available")
            return
        if self.is_healthy or detail != self._unavailable_detail:
            self.is_healthy = False
            self._unavailable_detail = detail
            log.error("influx.unavailable", extra={"detail": detail})

    async def drain(self) -> None:
        """Forever: write spooled batches to InfluxDB, oldest first, backing off while it is down."""
        attempt = 0
        while True:
            oldest = await self._spool.oldest()
            if oldest is None:
                self._set_health(True)
                self._wake.clear()
                await self._wake.wait()
                continue
            batch_id, body, points = oldest
            try:
                await self._write(body, points)
            except InfluxRejected as exc:
                await self._rejected(body, str(exc))
            except InfluxUnavailable as exc:
                self._set_health(False, str(exc))
                await asyncio.sleep(self._delay(min(attempt, 12)))
                attempt += 1
                continue
            attempt = 0
            await self._spool.remove(batch_id, points)
            self._metrics.spool_depth.set(self._spool.points)
            self._room.set()

    async def close_writer(self) -> None:
        """Release the writer's connections."""
        await self._writer.aclose()

    async def flush(self) -> None:
        """Wait until the spool is empty (call under a timeout at shutdown)."""
        while self._spool.points > 0:
            self._wake.set()
            await asyncio.sleep(0.05)
