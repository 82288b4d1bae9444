"""The quarantine: every refused message with its topic, time, reason, field, detail and payload.

Operators list it with ``weijian ingest quarantine [--reason R] [--limit N]``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ingest.sqlite_thread import SqliteThread
from ingest.validate import Quarantined

__all__ = ["QuarantineRow", "QuarantineStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    field TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_reason ON quarantine (reason, id);
"""


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """One stored refused message."""

    id: int
    received_at: str
    topic: str
    reason: str
    field: str
    detail: str
    payload: bytes


class QuarantineStore:
    """Append refused messages; list and count them."""

    def __init__(self, path: Path) -> None:
        self._db = SqliteThread(path, _SCHEMA)

    async def add(self, refused: list[Quarantined], received_at: datetime) -> None:
        """Store a batch of refused messages in one transaction."""
        if not refused:
            return
        when = received_at.astimezone(UTC).isoformat(timespec="milliseconds")
        rows = [(when, q.topic, q.reason, q.field, q.detail[:2000], q.payload) for q in refused]

        def _insert(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(
                    "INSERT INTO quarantine (received_at, topic, reason, field, detail, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )

        await self._db.run(_insert)

    def list(self, *, reason: str | None = None, limit: int = 50) -> list[QuarantineRow]:
        """The newest ``limit`` entries, optionally of one reason (synchronous: for the CLI)."""
        where, args = ("WHERE reason = ?", [reason]) if reason else ("", [])

        def _select(db: sqlite3.Connection) -> list[QuarantineRow]:
            cur = db.execute(
                f"SELECT id, received_at, topic, reason, field, detail, payload FROM quarantine"
                f" {where} ORDER BY id DESC LIMIT ?",
                [*args, limit],
            )
            return [QuarantineRow(*row) for row in cur]

        return self._db.call(_select)

    def counts(self) -> dict[str, int]:
        """Number of entries per reason (synchronous: for the CLI and tests)."""
        return dict(
            self._db.call(
                lambda db: db.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason").fetchall()
            )
        )

    def close(self) -> None:
        """Close the database."""
        self._db.close()
