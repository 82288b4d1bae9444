"""Bytes and topic in, ``Reading | GatewayStatus | Rejection`` out: ingest's functional core.

Wraps :func:`weijian.contract.decode_reading` with what only ingest knows: the site
registry (unknown devices, the district tag), the gateway status topic, and the range of
timestamps InfluxDB can store. Nothing here awaits, logs or touches a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from ingest.lineproto import STORABLE_FROM, STORABLE_UNTIL
from weijian.contract import (
    GatewayStatus,
    Reading,
    Rejection,
    RejectReason,
    decode_reading,
    decode_status,
    status_topic_gateway,
)
from weijian.registry import Registry

__all__ = ["OUT_OF_RANGE", "Incoming", "Quarantined", "Verdict", "VerdictCache", "classify", "classify_batch"]

log = logging.getLogger(__name__)

# Not a contract reason: a valid RFC 3339 time that InfluxDB's int64 nanoseconds cannot hold.
OUT_OF_RANGE: Final = "ts_out_of_range"


@dataclass(slots=True)
class Incoming:
    """One MQTT message as received; ``mid`` and ``qos`` are for the acknowledgement."""

    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A refused message with everything the quarantine store keeps."""

    topic: str
    payload: bytes
    reason: str
    field: str
    detail: str


Verdict = Reading | GatewayStatus | Rejection | None  # None: nothing to do (cleared retained status)


def _status(
    topic: str, gateway_id: str, payload: bytes, now: datetime
) -> GatewayStatus | Rejection | Quarantined | None:
    if not payload:
        return None  # a retained status being cleared
    status = decode_status(gateway_id, payload, now=now)
    if isinstance(status, Rejection):
        return status
    if not STORABLE_FROM <= status.ts < STORABLE_UNTIL:
        detail = f"ts: {status.ts.isoformat()} is outside 1677-2262"
        return Quarantined(topic, payload, OUT_OF_RANGE, "ts", detail)
    return status


def classify(
    topic: str, payload: bytes, *, root: str, now: datetime, registry: Registry
) -> Verdict | Quarantined:
    """Decide what one message is. Never raises for bad input.

    Args:
        topic: the MQTT topic.
        payload: the raw body.
        root: the topic root in use.
        now: the receiver's clock (for the 5-minute future limit).
        registry: the site registry (unknown devices are rejected).

    Returns:
        A Reading, a GatewayStatus, a Rejection, a Quarantined (for reasons outside the
        contract's enum) or None for an empty retained status.
    """
    gateway_id = status_topic_gateway(root, topic)
    if gateway_id is not None:
        return _status(topic, gateway_id, payload, now)
    verdict = decode_reading(topic, payload, now=now, root=root, known_devices=registry)
    if not isinstance(verdict, Reading):
        return verdict
    if not STORABLE_FROM <= verdict.ts < STORABLE_UNTIL:
        return Quarantined(
            topic, payload, OUT_OF_RANGE, "ts", f"ts: {verdict.ts.isoformat()} is outside 1677-2262"
        )
    # decode_reading has found the device in the registry, so its site is there too.
    kind = registry.sites[verdict.site_id].kind
    if verdict.kind is not kind:
        return Rejection(
            RejectReason.KIND_MISMATCH,
            "kind",
            f"kind: payload says {verdict.kind.value!r}; the registry has {verdict.site_id}/"
            f"{verdict.device_id} as {kind.value!r}",
        )
    return _speaks_for_itself(verdict, registry)


def _speaks_for_itself(reading: Reading, registry: Registry) -> Reading | Rejection:
    """A gateway may write only as itself: the payload's gateway must serve the device.

    Dedup and the gap count are keyed on ``(gateway_id, seq)``, so a payload naming another
    gateway would make that gateway's next real readings look like duplicates. A device the
    registry lists under no gateway (a third-party sender) may not borrow a registered
    gateway's id either.
    """
    serving = registry.gateway_of(reading.site_id, reading.device_id)
    claimed = reading.gateway_id
    if serving is None:
        if claimed not in registry.gateways:
            return reading
        expected = "no registered gateway"
    elif claimed == serving:
        return reading
    else:
        expected = f"{serving!r}"
    return Rejection(
        RejectReason.GATEWAY_MISMATCH,
        "gateway_id",
        f"gateway_id: payload says {claimed!r}; the registry has {expected} serving "
        f"{reading.site_id}/{reading.device_id}",
    )


class VerdictCache:
    """Verdicts shared by the two sessions of a partition, so that each message is parsed once.

    The storage and the alerts session of a partition receive the same messages; whichever
    classifies a message first leaves its verdict here and the other takes it. Keyed by topic
    and payload; bounded (the oldest entries go first), so a message only one session sees
    costs a little memory for a while, never correctness: a missing entry is parsed again.

    In a backlog drain one session runs ahead of the other; once it is more than ``size``
    messages ahead, its entries are evicted before the other takes them and every message is
    parsed twice. Each side counts the messages it classifies (re-synchronised on every entry it
    takes: both have then seen the same message), and :meth:`room_for` lets the side ahead wait
    (at most ``wait_s`` per batch) until the other is within ``size`` of it, but only while the
    caller says the other is live: a session that is not running, or whose stage is degraded
    (the alerts database down), holds nobody back.
    """

    SIDES: Final = ("storage", "alerts")

    def __init__(self, size: int, *, wait_s: float = 2.0) -> None:
        # key -> (the side that left it, its position in that side's count, the verdict)
        self._verdicts: OrderedDict[tuple[str, bytes], tuple[str, int, Verdict | Quarantined]] = OrderedDict()
        self._size = size
        self._wait_s = wait_s
        self._pos = dict.fromkeys(self.SIDES, 0)
        self._waiting: dict[str, tuple[int, asyncio.Event]] = {}  # side -> (position it waits for, event)
        self.hits = 0
        self.misses = 0
        self.waits = 0

    def __len__(self) -> int:
        return len(self._verdicts)

    def verdict(
        self, message: Incoming, *, root: str, now: datetime, registry: Registry, side: str = "storage"
    ) -> Verdict | Quarantined:
        """The message's verdict: the other session's, or a new one left for it."""
        key = (message.topic, message.payload)
        verdicts = self._verdicts
        pos = self._pos
        found = verdicts.pop(key, None)
        if found is not None:
            self.hits += 1
            _, at, verdict = found
            pos[side] = at  # this message was the other's at-th: now we are there too
        else:
            self.misses += 1
            pos[side] += 1
            verdict = classify(message.topic, message.payload, root=root, now=now, registry=registry)
            if len(verdicts) >= self._size:
                verdicts.popitem(last=False)
            verdicts[key] = (side, pos[side], verdict)
        if self._waiting:
            waiting = self._waiting.get("alerts" if side == "storage" else "storage")
            if waiting is not None and pos[side] >= waiting[0]:
                waiting[1].set()
        return verdict

    async def room_for(self, side: str, n: int, *, partner_live: bool, wait_s: float | None = None) -> None:
        """Before ``side`` classifies ``n`` messages: wait, briefly, for the other to catch up.

        Returns at once if the other is live and close enough that ``n`` more entries evict
        none it has yet to take, or is not live; else when it has caught up, or after ``wait_s``
        (the cache's own bound unless given: a partner still starting is waited for longer).
        """
        other = "alerts" if side == "storage" else "storage"
        # Never past this side: a batch larger than the cache must not wait for the other to lead.
        target = self._pos[side] + min(0, n - self._size)
        if not partner_live or self._pos[other] >= target:
            return
        self.waits += 1
        room = asyncio.Event()
        self._waiting[side] = (target, room)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._wait_s if wait_s is None else wait_s):
                    await room.wait()
        finally:
            del self._waiting[side]


def classify_batch(
    messages: list[Incoming],
    *,
    root: str,
    now: datetime,
    registry: Registry,
    cache: VerdictCache | None = None,
) -> tuple[list[Reading], list[GatewayStatus], list[Quarantined]]:
    """Classify a batch; an unexpected exception quarantines its message as ``internal_error``."""
    readings: list[Reading] = []
    statuses: list[GatewayStatus] = []
    refused: list[Quarantined] = []
    for message in messages:
        try:
            if cache is not None:
                verdict = cache.verdict(message, root=root, now=now, registry=registry, side="storage")
            else:
                verdict = classify(message.topic, message.payload, root=root, now=now, registry=registry)
        except Exception as exc:  # a poison message must not become a crash loop
            log.exception("message.internal_error", extra={"topic": message.topic[:200]})
            verdict = Rejection(RejectReason.INTERNAL_ERROR, "payload", f"{type(exc).__name__}: {exc}")
        if isinstance(verdict, Reading):
            readings.append(verdict)
        elif isinstance(verdict, GatewayStatus):
            statuses.append(verdict)
        elif isinstance(verdict, Rejection):
            reason = verdict.reason.value
            refused.append(Quarantined(message.topic, message.payload, reason, verdict.field, verdict.detail))
        elif isinstance(verdict, Quarantined):
            refused.append(verdict)
    return readings, statuses, refused
