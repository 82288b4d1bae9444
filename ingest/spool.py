"""The durable spool: line-protocol batches waiting for InfluxDB, oldest first, bounded in points.

The table ``alert_backlog`` is what versions before partitions kept for alerts when its queue
was full; it is only counted now (:attr:`PointSpool.backlog`), so that an upgrade can say what was
stored but never judged.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from ingest.sqlite_thread import SqliteThread

__all__ = ["PointSpool"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, points INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS alert_backlog (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, body BLOB NOT NULL);
"""


class PointSpool:
    """Batches of line protocol in a SQLite file; :attr:`points` is the depth kept in memory."""

    def __init__(self, path: Path, max_points: int) -> None:
        self._db = SqliteThread(path, _SCHEMA)
        self.max_points = max_points
        self.points = 0
        self.backlog = 0

    async def open(self) -> None:
        """Read the depth left by a previous run."""

        def _depth(db: sqlite3.Connection) -> tuple[int, int]:
            points = db.execute("SELECT coalesce(sum(points), 0) FROM batches").fetchone()[0]
            backlog = db.execute("SELECT count(*) FROM alert_backlog").fetchone()[0]
            return int(points), int(backlog)

        self.points, self.backlog = await self._db.run(_depth)

    def has_room(self, points: int) -> bool:
        """Whether a batch of ``points`` fits under the bound (an empty spool takes any batch)."""
        return self.points == 0 or self.points + points <= self.max_points

    async def append(self, body: bytes, points: int) -> None:
        """Add a batch at the tail (committed before returning)."""

        def _insert(db: sqlite3.Connection) -> None:
            with db:
                db.execute("INSERT INTO batches (points, body) VALUES (?, ?)", (points, body))

        async def _commit() -> None:
            await self._db.run(_insert)
            self.points += points

        await asyncio.shield(_commit())  # a cancelled caller must not skip the count of a commit

    async def oldest(self) -> tuple[int, bytes, int] | None:
        """The oldest batch as ``(id, body, points)``, or None if the spool is empty."""

        def _select(db: sqlite3.Connection) -> tuple[int, bytes, int] | None:
            row = db.execute("SELECT id, body, points FROM batches ORDER BY id LIMIT 1").fetchone()
            return None if row is None else (row[0], row[1], row[2])

        return await self._db.run(_select)

    async def remove(self, batch_id: int, points: int) -> None:
        """Delete a batch that InfluxDB has taken."""

        def _delete(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))

        async def _commit() -> None:
            await self._db.run(_delete)
            self.points -= points

        await asyncio.shield(_commit())

    def close(self) -> None:
        """Close the database."""
        self._db.close()
