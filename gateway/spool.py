"""The durable queue between acquisition and publishing: SQLite in WAL mode, plus ``seq``.

Every reading is committed here before it can be published, and deleted only when the
broker has acknowledged it (PUBACK). The same transaction that inserts a reading advances
the persisted ``seq``, so ``seq`` keeps increasing across restarts and crashes. The queue is
bounded by ``max_rows``; when full, the *oldest* readings not already in flight to the
broker are deleted to make room and counted in ``dropped`` (persisted, reported in the
gateway status). See docs/gateway.md.

The class is synchronous and thread-safe (one lock around one connection); the service
calls it through ``asyncio.to_thread`` so the event loop never waits on the disk.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from weijian.contract import Kind, MetricValue, Reading, encode_reading, reading_topic
from weijian.errors import SpoolError

__all__ = ["QueuedReading", "Sample", "Spool", "SpoolError", "SpoolStats", "last_seq"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a replay cursor only moves on
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    queued_at REAL NOT NULL                -- wall-clock unix seconds, for the oldest age
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('seq', 0), ('dropped', 0);
"""


@dataclass(frozen=True, slots=True)
class Sample:
    """A reading before it has a ``seq``: what a poll produced."""

    site_id: str
    device_id: str
    kind: Kind
    ts: datetime
    metrics: dict[str, MetricValue]
    resent: bool = False  # re-sent backlog (HJ 212 RF=1): judged late downstream


@dataclass(frozen=True, slots=True)
class QueuedReading:
    """A committed reading: its row id, topic and encoded payload."""

    row_id: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Queue depth, age of the oldest entry (seconds, None if empty), drops, last seq."""

    depth: int
    oldest_age_s: float | None
    dropped: int
    seq: int


def last_seq(path: Path) -> int:
    """The last seq a spool file gave out, read-only, as another process would read it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        return int(row[0]) if row else 0
    finally:
        db.close()


class Spool:
    """A bounded, durable FIFO of encoded readings.

    Args:
        path: the SQLite file (created with its folder if missing).
        gateway_id: stamped into every reading.
        topic_root: MQTT topic root of reading topics.
        max_rows: the bound; beyond it the oldest rows not in flight are dropped and counted
            (rows in flight, at most the publisher's window, may exceed it briefly).
        fsync: ``"full"`` (``synchronous=FULL``: a committed reading survives power loss) or
            ``"normal"`` (``synchronous=NORMAL``: survives a process crash, the last
            commits may be lost on power loss).
        wall_time: the clock for ``queued_at`` (injectable for tests).

    Raises:
        SpoolError: the file cannot be opened as a spool.
    """

    def __init__(
        self,
        path: Path,
        *,
        gateway_id: str,
        topic_root: str,
        max_rows: int,
        fsync: Literal["full", "normal"] = "full",
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.gateway_id = gateway_id
        self.topic_root = topic_root
        self.max_rows = max_rows
        self._wall_time = wall_time
        self._lock = threading.Lock()
        # Row ids up to here have been handed to the MQTT client in this process and are
        # awaiting PUBACK; the overflow policy spares them. Advanced by claim().
        self.sent_up_to = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={fsync.upper()}")
            self._db.executescript(_SCHEMA)
            self._depth: int = self._db.execute("SELECT count(*) FROM queue").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"{path}: cannot open the spool: {exc}") from exc

    def close(self) -> None:
        """Checkpoint and close the file."""
        with self._lock:
            self._db.close()

    def _meta(self, key: str) -> int:
        value: int = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
        return value

    def append(self, samples: Sequence[Sample]) -> list[int]:
        """Give each sample the next ``seq`` and commit them, in one transaction.

        Returns:
            The seqs assigned, in order.

        Raises:
            SpoolError: the write failed; nothing of the batch was stored.
        """
        if not samples:
            return []
        now = self._wall_time()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                seq = self._meta("seq")
                rows = []
                seqs = []
                for s in samples:
                    seq += 1
                    reading = Reading(
                        site_id=s.site_id,
                        device_id=s.device_id,
                        gateway_id=self.gateway_id,
                        kind=s.kind,
                        ts=s.ts,
                        seq=seq,
                        metrics=s.metrics,
                        resent=s.resent,
                    )
                    topic = reading_topic(self.topic_root, s.site_id, s.device_id)
                    rows.append((topic, encode_reading(reading), now))
                    seqs.append(seq)
                self._db.executemany(
                    "INSERT INTO queue (topic, payload, queued_at) VALUES (?, ?, ?)", rows
                )
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (seq,))
                excess = self._depth + len(rows) - self.max_rows
                dropped = 0
                if excess > 0:
                    # Overflow policy: drop the oldest readings not yet handed to the broker.
                    # Recent readings say what is happening now, which is what supervision
                    # acts on. Readings in flight are spared (they are being delivered, so
                    # counting them as lost would be wrong); the loss is counted exactly.
                    before = self._db.total_changes
                    self._db.execute(
                        "DELETE FROM queue WHERE id IN "
                        "(SELECT id FROM queue WHERE id > ? ORDER BY id LIMIT ?)",
                        (self.sent_up_to, excess),
                    )
                    dropped = self._db.total_changes - before
                    self._db.execute(
                        "UPDATE meta SET value = value + ? WHERE key = 'dropped'", (dropped,)
                    )
                self._db.execute("COMMIT")
            except BaseException as exc:
                # Whatever failed (the database, or building a Reading), leave no transaction
                # open: it would hold the write lock and break every later append.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise SpoolError(f"{self.path}: cannot store readings: {exc}") from exc
                raise
            self._depth += len(rows) - dropped
            return seqs

    def claim(self, limit: int) -> list[QueuedReading]:
        """Up to ``limit`` queued readings not yet handed out, oldest first, now marked in flight.

        Reading and marking happen under one lock, so the overflow policy in :meth:`append`
        can never delete (and count as lost) a row the publisher is about to send.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload FROM queue WHERE id > ? ORDER BY id LIMIT ?",
                (self.sent_up_to, limit),
            ).fetchall()
            if rows:
                self.sent_up_to = rows[-1][0]
        return [QueuedReading(r[0], r[1], r[2]) for r in rows]

    def read_after(self, row_id: int, limit: int) -> list[QueuedReading]:
        """Up to ``limit`` queued readings with a row id above ``row_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload FROM queue WHERE id > ? ORDER BY id LIMIT ?",
                (row_id, limit),
            ).fetchall()
        return [QueuedReading(r[0], r[1], r[2]) for r in rows]

    def delete(self, row_ids: Sequence[int]) -> int:
        """Remove acknowledged readings; returns how many were still queued."""
        if not row_ids:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                before = self._db.total_changes
                self._db.executemany("DELETE FROM queue WHERE id = ?", [(i,) for i in row_ids])
                removed = self._db.total_changes - before
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise SpoolError(f"{self.path}: cannot delete acknowledged readings: {exc}") from exc
            self._depth -= removed
            return removed

    def stats(self) -> SpoolStats:
        """Depth, oldest age, drops and the last seq given out."""
        with self._lock:
            row = self._db.execute("SELECT queued_at FROM queue ORDER BY id LIMIT 1").fetchone()
            oldest = None if row is None else row[0]
            dropped, seq = self._meta("dropped"), self._meta("seq")
            depth = self._depth
        age = None if oldest is None else max(0.0, self._wall_time() - oldest)
        return SpoolStats(depth, age, dropped, seq)
