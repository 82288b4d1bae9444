"""Forwarding HJ 212 packets to upstream platforms (一点多发), each from a durable queue of its own.

A data logger commonly reports to several platforms at once (the county's, the province's).
The gateway can stand in for that: every packet it accepts from a configured logger (known MN,
right password, good CRC) is forwarded *unchanged* (the bytes as received, encrypted or not)
to each ``[[gateway.hj212.upstreams]]``, in arrival order. Each upstream has its own SQLite
queue beside the gateway's spool (``<spool>.hj212-<name>.sqlite``), so an upstream that is
down only delays its own copy; the others, and the gateway's own readings, go on.

A packet leaves its queue once the upstream has it: after its 9014 answer (matched by QN) for
a packet that asks for one (Flag bit 0), after the TCP write otherwise. An upstream that does
not answer within ``timeout_s`` is disconnected and retried with backoff; the packet is sent
again (the upstream de-duplicates retries on MN, QN and CN, as HJ 212-2025 asks receivers to).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from pathlib import Path

from gateway import hj212
from weijian.backoff import Backoff
from weijian.config import Hj212Upstream

__all__ = ["ForwardQueue", "Forwarder"]

log = logging.getLogger(__name__)


class ForwardQueue:
    """A durable FIFO of raw packets for one upstream (SQLite, WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL)"
        )

    def put(self, packets: list[bytes]) -> None:
        """Append packets in order, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO queue (data) VALUES (?)", [(p,) for p in packets])
            self._db.execute("COMMIT")

    def head(self, limit: int = 100) -> list[tuple[int, bytes]]:
        """The oldest packets, with their row ids."""
        with self._lock:
            return list(self._db.execute("SELECT id, data FROM queue ORDER BY id LIMIT ?", (limit,)))

    def drop(self, row_id: int) -> None:
        """Remove one sent packet."""
        with self._lock:
            self._db.execute("DELETE FROM queue WHERE id = ?", (row_id,))

    def depth(self) -> int:
        """Packets waiting."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM queue").fetchone()[0])

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


class Forwarder:
    """Sends one upstream's queue, in order, for as long as it runs."""

    def __init__(self, upstream: Hj212Upstream, queue: ForwardQueue) -> None:
        self.upstream = upstream
        self.queue = queue
        self.sent = 0
        self._wake = asyncio.Event()
        self._pending: list[bytes] = []
        self._have = asyncio.Event()

    def put(self, packet: bytes) -> None:
        """Queue a packet (from the event loop; committed in batches by :meth:`commit`)."""
        self._pending.append(packet)
        self._have.set()

    async def commit(self) -> None:
        """Forever: commit what was put, a batch at a time, off the event loop."""
        while True:
            await self._have.wait()
            self._have.clear()
            await self.flush()
            await asyncio.sleep(0.02)  # gather the next batch

    async def flush(self) -> None:
        """Commit what is pending now (also at shutdown)."""
        batch, self._pending = self._pending, []
        if batch:
            await asyncio.to_thread(self.queue.put, batch)
            self._wake.set()

    async def run(self) -> None:
        """Connect, send, reconnect with backoff; until cancelled."""
        backoff = Backoff(0.5, 30.0, jitter=0.5)
        while True:
            try:
                await self._session()
                backoff.reset()
            except (OSError, TimeoutError, ConnectionError) as exc:
                delay = backoff.next()
                log.warning("hj212.upstream_down", extra={
                    "upstream": self.upstream.name, "error": repr(exc), "queued": self.queue.depth(),
                    "retry_in_s": round(delay, 2)})
                await asyncio.sleep(delay)

    async def _session(self) -> None:
        u = self.upstream
        async with asyncio.timeout(u.timeout_s):
            reader, writer = await asyncio.open_connection(u.host, u.port)
        log.info("hj212.upstream_connected", extra={"upstream": u.name})
        frames = hj212.FrameReader()
        try:
            while True:
                batch = await asyncio.to_thread(self.queue.head)
                if not batch:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._wake.wait()
                    continue
                for row_id, data in batch:
                    writer.write(data)
                    await writer.drain()
                    if _wants_reply(data):
                        await self._answer(reader, frames, _qn(data))
                    await asyncio.to_thread(self.queue.drop, row_id)
                    self.sent += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, frames: hj212.FrameReader, qn: str | None) -> None:
        """Wait for the upstream's answer to this QN: 9014 to data, 9013 to a heartbeat or a request.

        Other packets it sends are ignored.
        """
        async with asyncio.timeout(self.upstream.timeout_s):
            while True:
                data = await reader.read(4096)
                if not data:
                    raise ConnectionError("the upstream closed the connection")
                for item in frames.feed(data):
                    if isinstance(item, hj212.Frame):
                        with contextlib.suppress(ValueError, UnicodeDecodeError):
                            reply = hj212.parse_packet(item.segment)
                            if reply.cn in ("9013", "9014") and (qn is None or reply.qn == qn):
                                return


def _wants_reply(data: bytes) -> bool:
    """Flag bit 0 of a raw packet."""
    at = data.find(b";Flag=")
    if at < 0:
        return False
    end = data.find(b";", at + 6)
    try:
        return bool(int(data[at + 6 : end]) & 1)
    except ValueError:
        return False


def _qn(data: bytes) -> str | None:
    """The header's QN (the first field after ``##LLLL``), if the packet has one."""
    if data[6:9] != b"QN=":
        return None
    end = data.find(b";", 9)
    return data[9:end].decode("ascii", "replace")
