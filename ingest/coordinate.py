"""Who runs which partition: PostgreSQL advisory locks, or one process holding a file lock.

:class:`PgCoordinator` keeps one PostgreSQL connection per process. On it the process holds
a *member* lock (two-key advisory lock ``(members class, random id)``), which is how every
process counts the live members (``pg_locks``), and one lock ``(partitions class, index)``
per partition it runs. A session-level advisory lock lives exactly as long as the connection:
SIGKILL closes the socket and PostgreSQL frees the locks at once; a machine that vanishes is
noticed by the server's TCP user timeout (``member_timeout_s``), set on the connection. No
heartbeat table, no home-made protocol.

Each round (every ``claim_interval_s``) a process counts the members, claims free partitions
up to its fair share ``ceil(partitions / members)``, and names what it holds beyond that
share, which the caller stops cleanly and then unlocks, so a process that joins gets work
without a manual step. After a reconnection (PostgreSQL restarted) the process takes back
its own partitions at once and waits the connection budget plus two rounds before claiming
new ones, so the processes that come back later find theirs free. A process claims nothing
until 90% of ``claim_interval_s`` after it connected, so processes started together count
each other before claiming. ``weijian ingest run`` connects first thing
(:meth:`PgCoordinator.start_joining`), while it loads the registry, and that wait counts from
the connection; the member lock itself is taken by the first round, once the process has
started (a process whose start fails or hangs is never counted), and claims wait at least
half a ``claim_interval_s`` after it (:meth:`PgCoordinator.settling_s`).

:class:`LocalCoordinator` is for one process with SQLite: it holds every partition while it
holds an exclusive ``flock`` on a file, so a second process on the same machine waits as a
hot standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import random
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg

from weijian.errors import PartitionLost

__all__ = ["Coordinator", "LocalCoordinator", "PgCoordinator", "Round", "lock_key"]

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A signed 32-bit advisory-lock key for ``name`` (the first key of a two-key lock)."""
    value = zlib.crc32(name.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


@dataclass(slots=True)
class Round:
    """The outcome of one claim round.

    Attributes:
        claimed: partitions now locked by this process: start them.
        lost: partitions no longer ours (the lock could not be taken back): stop them now.
        surplus: ours, but over the fair share: stop them cleanly, then :meth:`unlock`.
    """

    claimed: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)
    surplus: set[int] = field(default_factory=set)


class Coordinator(Protocol):
    """What the ingest shell needs of a coordinator."""

    held: set[int]

    async def round(self) -> Round:
        """Claim, count, balance; never raises for an unreachable database."""

    async def unlock(self, index: int) -> None:
        """Give a stopped partition back."""

    def fence(self, index: int) -> tuple[int, int, int] | None:
        """``(classid, objid, backend pid)`` of the lock to check when writing, or None.

        Raises:
            ConnectionError: the coordinator is reconnecting; try again later.
        """

    async def close(self) -> None:
        """Release everything."""

    def settling_s(self) -> float:
        """Seconds until this process may claim after joining (0: it may, or it never waits)."""


class PgCoordinator:
    """Partitions claimed through PostgreSQL advisory locks.

    Args:
        url: ``postgresql://...`` (the ``[tasks] url``).
        group: the deployment's name (``[ingest] client_id``): separate keys per deployment.
        partitions: the indices that have work (non-empty partitions).
        interval_s: seconds between rounds.
        member_timeout_s: how long the server waits for a silent peer before dropping it.
        connect_timeout_s: connection budget.
    """

    def __init__(
        self,
        url: str,
        group: str,
        partitions: list[int],
        *,
        interval_s: float,
        member_timeout_s: float,
        connect_timeout_s: float,
    ) -> None:
        self._url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._members_class = lock_key(group + "/members")
        self._partitions_class = lock_key(group + "/partitions")
        self._partitions = sorted(partitions)
        self._interval_s = interval_s
        self._member_timeout_s = member_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.AsyncConnection[tuple[int, ...]] | None = None
        self._pid = 0
        self._member_id = random.randrange(1, 2**31)
        self._connected_at = 0.0
        self._member_since = 0.0  # when the member lock was taken on this connection (0: not yet)
        self._joining: asyncio.Future[None] | None = None
        self._connections = 0  # the first waits one round before claiming, a reconnection longer
        self._last_error = ""
        self.held: set[int] = set()
        self.members = 0

    @property
    def is_connected(self) -> bool:
        """Whether the lock connection is up."""
        return self._conn is not None and not self._conn.closed

    def assign(self, partitions: list[int]) -> None:
        """Set the partitions that have work (for a coordinator made before the registry loaded)."""
        self._partitions = sorted(partitions)

    def start_joining(self) -> None:
        """Connect in the background, before the first round (``ingest run`` calls it first thing).

        Only the connection: the member lock, which the running processes count (and give
        partitions up for), is taken by the first round, once this process has started and
        can take work. The wait before claiming counts from this connection, so it passes
        while the registry and the rule packs load. Never raises: a database that cannot be
        reached is tried again by the rounds.
        """
        if self._joining is None and not self.is_connected:
            self._joining = asyncio.ensure_future(self._join())

    async def _join(self) -> None:
        try:
            await self._connect(set(), member=False)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("coordinator.unavailable", extra={"error": str(exc), "held": []})
            self._last_error = str(exc)
            await self._drop()

    def _settle_wait_s(self) -> float:
        """How long after connecting this process waits before claiming new partitions."""
        if self._connections > 1:  # a reconnection: let the slowest peer's attempt finish too
            return self._connect_timeout_s + 2 * self._interval_s
        return self._interval_s

    def settling_s(self) -> float:
        """Seconds until this process may claim (0 once it may, or while disconnected).

        90% of the wait after connecting (``claim_interval_s``; after a reconnection the
        connection budget plus two intervals), and at least half a ``claim_interval_s`` after
        taking the member lock, so that processes started together count each other first.
        """
        if not self.is_connected:
            return 0.0
        now = time.monotonic()
        half = 0.5 * self._interval_s
        member = self._member_since + half if self._member_since else now + half
        return max(0.0, self._connected_at + 0.9 * self._settle_wait_s() - now, member - now)

    def fence(self, index: int) -> tuple[int, int, int] | None:
        """The lock that must still be ours when a write for ``index`` commits."""
        if index not in self.held:
            raise PartitionLost(f"partition {index}: its lock is no longer held by this process")
        if not self.is_connected:
            raise ConnectionError(f"partition {index}: the coordinator is reconnecting")
        return (self._partitions_class, index, self._pid)

    async def _scalar(self, sql: str, *params: int) -> int:
        assert self._conn is not None
        async with asyncio.timeout(self._connect_timeout_s):
            cur = await self._conn.execute(sql, params)
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def _try_lock(self, cls: int, key: int) -> bool:
        return bool(await self._scalar("SELECT pg_try_advisory_lock(%s, %s)::int", cls, key))

    async def _take_member_lock(self) -> None:
        while not await self._try_lock(self._members_class, self._member_id):
            self._member_id = random.randrange(1, 2**31)
        self._member_since = time.monotonic()

    async def _connect(self, lost: set[int], *, member: bool = True) -> None:
        async with asyncio.timeout(self._connect_timeout_s + 1):
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout_s))
            )
        self._conn = conn
        timeout_ms = int(self._member_timeout_s * 1000)
        idle = max(1, int(self._member_timeout_s / 3))
        # The server's view of this process: a peer silent this long is dropped with its locks.
        for setting, value in (("tcp_user_timeout", timeout_ms), ("tcp_keepalives_idle", idle),
                               ("tcp_keepalives_interval", idle), ("tcp_keepalives_count", 3)):
            await conn.execute(f"SET {setting} = {int(value)}")
        self._pid = conn.info.backend_pid
        if member:
            await self._take_member_lock()
        self._connected_at = time.monotonic()
        self._connections += 1
        for index in sorted(self.held):
            if not await self._try_lock(self._partitions_class, index):
                lost.add(index)
                self.held.discard(index)  # at once: a later failure must not leave it listed
        log.info("coordinator.connected", extra={"member": self._member_id, "held": sorted(self.held),
                                                  "lost": sorted(lost)})

    async def round(self) -> Round:
        """One round: (re)connect, count members, claim up to the fair share, name the surplus."""
        out = Round()
        try:
            if self._joining is not None:  # started at start-up: let it finish
                joining, self._joining = self._joining, None
                await joining
            fresh = not self.is_connected
            if fresh:
                await self._connect(out.lost)
            elif not self._member_since:  # joined at start-up: now this process can take work
                await self._take_member_lock()
            # pg_locks lists the whole cluster; advisory locks belong to one database.
            self.members = await self._scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted"
                " AND classid::bigint = %s"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                self._members_class & 0xFFFFFFFF,
            )
            share = math.ceil(len(self._partitions) / max(1, self.members))
            # Claim nothing in the round that connected, so that processes starting (or coming
            # back after a PostgreSQL restart) together count each other first; after a
            # reconnection wait long enough for the slowest peer's connection attempt too.
            settled = not fresh and self.settling_s() <= 0
            if len(self.held) < share and settled:
                start = self._member_id % max(1, len(self._partitions))
                for index in self._partitions[start:] + self._partitions[:start]:
                    if len(self.held) >= share:
                        break
                    if index not in self.held and await self._try_lock(self._partitions_class, index):
                        self.held.add(index)
                        out.claimed.add(index)
            if len(self.held) > share:
                out.surplus = set(sorted(self.held)[share:])
            self._last_error = ""
        except (psycopg.Error, OSError, TimeoutError) as exc:
            if str(exc) != self._last_error:  # log changes, not repetitions
                log.warning("coordinator.unavailable", extra={"error": str(exc), "held": sorted(self.held)})
                self._last_error = str(exc)
            await self._drop()
        return out

    async def unlock(self, index: int) -> None:
        """Give a partition back (after its runner stopped)."""
        self.held.discard(index)
        if self.is_connected:
            try:
                await self._scalar("SELECT pg_advisory_unlock(%s, %s)::int", self._partitions_class, index)
            except (psycopg.Error, OSError, TimeoutError):
                await self._drop()  # the locks go with the connection anyway

    async def _drop(self) -> None:
        self._member_since = 0.0  # the member lock goes with the connection
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def close(self) -> None:
        """Close the connection: PostgreSQL frees every lock of this process."""
        self.held.clear()
        if self._joining is not None:
            self._joining.cancel()
            await asyncio.gather(self._joining, return_exceptions=True)
            self._joining = None
        await self._drop()


class LocalCoordinator:
    """Every partition, for one process, while it holds an exclusive lock on ``path``."""

    def __init__(self, path: Path, partitions: list[int]) -> None:
        self._path = path
        self._partitions = set(partitions)
        self._fd: int | None = None
        self._last_error = ""
        self.held: set[int] = set()
        self.members = 1

    @property
    def locked(self) -> bool:
        """Whether this process holds the lock file."""
        return self._fd is not None

    def fence(self, index: int) -> tuple[int, int, int] | None:
        """No fencing is needed: no other process can hold the file lock."""
        return None

    async def round(self) -> Round:
        """Take the file lock if it is free; then hold everything."""
        out = Round()
        if self._fd is None:
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                if str(exc) != self._last_error:
                    log.error("coordinator.lock_file_unusable",
                              extra={"path": str(self._path), "error": str(exc)})
                self._last_error = str(exc)
                return out
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return out  # another ingest process has it: wait as a standby
            self._fd = fd
            log.info("coordinator.local_lock", extra={"path": str(self._path)})
        out.claimed = self._partitions - self.held
        self.held |= out.claimed
        return out

    async def unlock(self, index: int) -> None:
        """Forget a partition (it is claimed again next round)."""
        self.held.discard(index)

    def settling_s(self) -> float:
        """A file lock needs no wait: the process that holds it holds everything."""
        return 0.0

    async def close(self) -> None:
        """Release the file lock."""
        self.held.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
