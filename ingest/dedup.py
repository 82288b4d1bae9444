"""Duplicate and gap detection by ``(gateway_id, seq)``, persisted so it survives SIGKILL.

Per gateway we remember the highest seq and which seqs within ``window`` below it were seen
(as the range tracked and its holes: memory grows with the holes, not the window). A seq
already seen is a duplicate. A seq older than the window is let through: storing it
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
from itertools import pairwise
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
    """What we know about one gateway's sequence numbers, in memory proportional to its holes.

    A gateway's seqs come mostly in order, so rather than every seq seen in the window (100,000
    per gateway by default: gigabytes at a city's scale after a few days) this keeps the range
    ``[floor, max_seq]`` and the seqs of that range not seen (``holes``), plus the few seen below
    ``floor`` (``early``: late ones older than the first seq tracked).
    """

    max_seq: int = -1
    floor: int = 0
    holes: set[int] = field(default_factory=set)
    early: set[int] = field(default_factory=set)
    missing: int = 0


class SeqTracker:
    """In-memory dedup state; pure, so the tests drive it directly."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.gateways: dict[str, GatewaySeqs] = {}
        self.too_old = 0

    def admit(self, gateway_id: str, seq: int) -> bool:
        """Record ``seq``; True if it is new, False if it is a duplicate.

        A seq at or below ``max_seq - window`` is let through (counted in :attr:`too_old`).
        """
        state = self.gateways.get(gateway_id)
        if state is None:
            state = self.gateways[gateway_id] = GatewaySeqs(max_seq=seq, floor=seq)
            return True
        top = state.max_seq
        if seq > top:
            state.missing += seq - top - 1
            low = max(top + 1, seq - self.window + 1)  # holes further down are out of the window
            if seq > low:
                state.holes.update(range(low, seq))
            state.max_seq = seq
            return True
        if seq <= top - self.window:
            self.too_old += 1
            return True
        if seq >= state.floor:
            if seq not in state.holes:
                return False
            state.holes.discard(seq)
        elif seq in state.early:
            return False
        else:
            state.early.add(seq)
        state.missing = max(0, state.missing - 1)  # a late one fills a hole
        return True

    def prune(self) -> None:
        """Forget what fell out of the window (call once per batch)."""
        for state in self.gateways.values():
            bottom = state.max_seq - self.window  # this and below: too old
            if state.floor <= bottom:
                state.floor = bottom + 1
                if state.holes:
                    state.holes = {h for h in state.holes if h > bottom}
                if state.early:
                    state.early = set()  # all below the old floor, so out of the window now

    def restore(self, gateway_id: str, seen: array[int]) -> None:
        """Take a gateway's seqs recorded as seen (the dedup store's blocks)."""
        if not seen:
            return
        top = max(seen)
        bottom = top - self.window
        inside = sorted({s for s in seen if s > bottom})
        state = GatewaySeqs(max_seq=top, floor=inside[0])  # its gap count is loaded apart
        if len(inside) != top - inside[0] + 1:  # not contiguous: list what is not there
            for a, b in pairwise(inside):
                if b - a > 1:
                    state.holes.update(range(a + 1, b))
        self.gateways[gateway_id] = state


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
            current: str | None = None
            seqs: array[int] = array("q")
            # One gateway at a time (the index orders them), so only its seqs are held at once.
            rows = db.execute("SELECT gateway, seqs FROM seen_blocks ORDER BY gateway")
            for gateway, blob in rows:
                if not wanted(gateway):
                    continue
                if gateway != current:
                    if current is not None:
                        tracker.restore(current, seqs)
                    current, seqs = gateway, array("q")
                seqs.frombytes(blob)
            if current is not None:
                tracker.restore(current, seqs)
            for gateway, missing in db.execute("SELECT gateway, missing FROM gaps"):
                if wanted(gateway) and gateway in tracker.gateways:
                    tracker.gateways[gateway].missing = missing
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
