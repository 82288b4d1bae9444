"""One thread per SQLite file: every statement for that file runs there, never in the event loop.

WAL mode with ``synchronous=NORMAL``: a committed transaction survives SIGKILL of the
process (the WAL is in the OS page cache); a power cut may lose the last commits.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

__all__ = ["SqliteThread"]

T = TypeVar("T")


class SqliteThread:
    """A SQLite connection owned by one worker thread; :meth:`run` awaits a function on it."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.name}")
        self._db: sqlite3.Connection | None = None
        self._schema = schema
        self._closed = False

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(self._schema)
            self._db = db
        return self._db

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` synchronously (for the CLI and tests, not the event loop)."""
        if self._closed:  # after close(): a short-lived connection of the caller's own
            db = sqlite3.connect(self.path)
            try:
                db.executescript(self._schema)
                return fn(db)
            finally:
                db.close()
        return self._executor.submit(lambda: fn(self._open())).result()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the file's thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._open()))

    def close(self) -> None:
        """Close the connection and stop the thread."""

        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        if not self._closed:
            self._executor.submit(_close).result()
            self._executor.shutdown(wait=True)
            self._closed = True
