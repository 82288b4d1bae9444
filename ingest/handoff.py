"""The hand-off to alerts: a bounded queue that never blocks storage and never loses an item.

Storage puts every accepted, deduplicated reading and every gateway status with
:meth:`AlertHandoff.offer`, which never waits on alerts: what the queue has no room for goes
to a durable backlog (a table in the spool file), committed before the messages are
acknowledged. A pump task moves the backlog into the queue, oldest first, as alerts makes
room; while the backlog holds anything, new items queue behind it, so alerts sees them in order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from ingest.spool import Spool
from weijian.contract import GatewayStatus, Reading

__all__ = ["AlertHandoff", "AlertItem"]

log = logging.getLogger(__name__)

AlertItem = Reading | GatewayStatus
_READING: Final = "r"
_STATUS: Final = "s"


def _encode(item: AlertItem) -> tuple[str, bytes]:
    return (_READING if isinstance(item, Reading) else _STATUS), item.model_dump_json().encode()


def _decode(kind: str, body: bytes) -> AlertItem:
    if kind == _READING:
        return Reading.model_validate_json(body)
    return GatewayStatus.model_validate_json(body)


class AlertHandoff:
    """Owner of the alerts inbox and its durable overflow."""

    def __init__(self, spool: Spool, inbox_size: int) -> None:
        self.inbox: asyncio.Queue[AlertItem] = asyncio.Queue(maxsize=inbox_size)
        self._spool = spool
        self._wake = asyncio.Event()
        self.overflowed = 0

    @property
    def lag(self) -> int:
        """Items waiting for alerts: in the queue plus in the backlog."""
        return self.inbox.qsize() + self._spool.backlog

    async def offer(self, items: list[AlertItem]) -> None:
        """Queue what fits now; commit the rest to the backlog. Never waits for alerts."""
        taken = 0
        if self._spool.backlog == 0:
            inbox = self.inbox
            while taken < len(items) and not inbox.full():
                inbox.put_nowait(items[taken])
                taken += 1
        if taken < len(items):
            rest = items[taken:]
            if self._spool.backlog == 0:
                log.warning("alerts.backlog_started", extra={"items": len(rest)})
            await self._spool.backlog_append([_encode(item) for item in rest])
            self.overflowed += len(rest)
            self._wake.set()

    async def pump(self) -> None:
        """Forever: move backlog items into the queue as alerts consumes."""
        while True:
            if self._spool.backlog == 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            rows = await self._spool.backlog_oldest(1000)
            if not rows:
                self._spool.backlog = 0
                continue
            for _, kind, body in rows:
                await self.inbox.put(_decode(kind, body))
            await self._spool.backlog_remove(rows[-1][0], len(rows))
            if self._spool.backlog == 0:
                log.info("alerts.backlog_drained")

    async def save_queue(self) -> None:
        """At shutdown: move what alerts has not taken from the queue to the backlog."""
        left: list[AlertItem] = []
        while not self.inbox.empty():
            left.append(self.inbox.get_nowait())
        if left:
            await self._spool.backlog_append([_encode(item) for item in left])
