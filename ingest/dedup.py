"""Duplicate and gap detection by ``(gateway_id, seq)``, persisted so it survives SIGKILL.

Per gateway we remember the highest seq and every seq seen within ``window`` below it.
A seq already seen is a duplicate. A seq older than the window is let through: storing it
again is harmless (same point in InfluxDB) and dropping it could lose a late reading.
Gaps: a jump from ``max`` to ``seq`` adds ``seq - max - 1`` missing; a late seq that fills
a hole takes one away. The seen seqs are written to SQLite after the batch is stored and
before it is acknowledged, so a redelivery after a restart is recognised. They are written as
one packed block per gateway per batch (a row per seq cost about 10 us per reading).
"""

from __future__ import annotations

import sqlite3
from array import array
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ingest.sqlite_thread import SqliteThread

__all__ = ["DedupStore", "GatewaySeqs", "SeqTracker"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_blocks (
    id INTEGER PRIMARY KEY, gateway TEXT NOT NULL, max_seq INTEGER NOT NULL, seqs BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_blocks_gateway ON seen_blocks (gateway, max_seq);
CREATE TABLE IF NOT EXISTS gaps (gateway TEXT PRIMARY KEY, missing INTEGER NOT NULL);
"""


@dataclass(slots=True)
class GatewaySeqs:
    """What we know about one gateway's sequence numbers."""

    max_seq: int = -1
    seen: set[int] = field(default_factory=set)
    missing: int = 0


class SeqTracker:
    """In-memory dedup state; pure, so the tests drive it directly."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.gateways: dict[str, GatewaySeqs] = {}
        self.too_old = 0

    def admit(self, gateway_id: str, seq: int) -> bool:
        """Record ``seq``; True if it is new, False if it is a duplicate."""
        state = self.gateways.get(gateway_id)
        if state is None:
            state = self.gateways[gateway_id] = GatewaySeqs()
        if seq > state.max_seq:
            if state.max_seq >= 0:
                state.missing += seq - state.max_seq - 1
            state.max_seq = seq
            state.seen.add(seq)
            return True
        if seq in state.seen:
            return False
        if seq <= state.max_seq - self.window:
            self.too_old += 1
            return True
        state.seen.add(seq)
        state.missing = max(0, state.missing - 1)
        return True

    def prune(self) -> None:
        """Forget seqs that fell out of the window (call once per batch)."""
        for state in self.gateways.values():
            if len(state.seen) > self.window + self.window // 4:
                floor = state.max_seq - self.window
                state.seen = {s for s in state.seen if s > floor}


class DedupStore:
    """SQLite persistence of a :class:`SeqTracker`."""

    def __init__(self, path: Path, window: int) -> None:
        self._db = SqliteThread(path, _SCHEMA)
        self.window = window
        self._batches = 0

    async def load(self, wanted: Callable[[str], bool] = lambda _: True) -> SeqTracker:
        """Rebuild the tracker from disk, for the gateways ``wanted`` accepts (one partition's)."""

        def _load(db: sqlite3.Connection) -> SeqTracker:
            tracker = SeqTracker(self.window)
            for gateway, max_seq, blob in db.execute("SELECT gateway, max_seq, seqs FROM seen_blocks"):
                if not wanted(gateway):
                    continue
                state = tracker.gateways.setdefault(gateway, GatewaySeqs())
                seqs = array("q")
                seqs.frombytes(blob)
                state.seen.update(seqs)
                state.max_seq = max(state.max_seq, max_seq)
            tracker.prune()
            for gateway, missing in db.execute("SELECT gateway, missing FROM gaps"):
                if wanted(gateway):
                    tracker.gateways.setdefault(gateway, GatewaySeqs()).missing = missing
            return tracker

        return await self._db.run(_load)

    async def save(self, admitted: list[tuple[str, int]], tracker: SeqTracker) -> None:
        """Persist the seqs admitted in a batch, the gap counts, and prune old rows now and then."""
        self._batches += 1
        prune = self._batches % 50 == 0
        by_gateway: dict[str, array[int]] = defaultdict(lambda: array("q"))
        for gateway, seq in admitted:
            by_gateway[gateway].append(seq)
        blocks = [(g, max(seqs), seqs.tobytes()) for g, seqs in by_gateway.items()]
        # Only this batch's gateways: a gap count changes only when one of its seqs is admitted.
        gaps = [(g, tracker.gateways[g].missing) for g in by_gateway]
        floors = [(g, s.max_seq - self.window) for g, s in tracker.gateways.items()]

        def _save(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("INSERT INTO seen_blocks (gateway, max_seq, seqs) VALUES (?, ?, ?)", blocks)
                db.executemany("INSERT OR REPLACE INTO gaps (gateway, missing) VALUES (?, ?)", gaps)
                if prune:
                    db.executemany("DELETE FROM seen_blocks WHERE gateway = ? AND max_seq <= ?", floors)

        await self._db.run(_save)

    def close(self) -> None:
        """Close the database."""
        self._db.close()
