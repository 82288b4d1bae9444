"""Notification delivery: SMS webhook, WeCom and DingTalk robots, and the outbox worker.

Messages are queued durably in the database outbox by the service (in the same transaction
as the alert change), and this worker sends them: so a slow or dead receiver delays
messages but never blocks the engine, and a restart loses none. Each channel implements one
``send(item)`` that returns normally on success or raises :class:`DeliveryFailed` saying
whether a retry can help (5xx, 429, timeouts and refused connections can; other 4xx cannot).

SMS webhook (``[sms] url``): ``POST`` of the JSON body with headers
``X-Weijian-Timestamp`` (unix seconds), ``X-Weijian-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>." + body with [sms] secret>`` (:func:`weijian.contract.webhook_signature`) and
``Idempotency-Key`` (also in the body); a relay checks the timestamp is within 5 minutes,
verifies the signature and drops a key it has seen. See docs/alerts.md for the formats.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import random
import socket
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from alerts.store import DeliveryStatus, OutboxItem, Store
from weijian.backoff import Backoff
from weijian.config import AlertsSettings, SmsSettings
from weijian.contract import SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature
from weijian.errors import DeliveryFailed, WeijianError

__all__ = [
    "DeliveryFailed",
    "DingTalkRobot",
    "Notifier",
    "OutboxWorker",
    "SmsWebhook",
    "WeComRobot",
    "build_channels",
]

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """One channel: deliver one item or raise :class:`DeliveryFailed`."""

    async def send(self, client: httpx.AsyncClient, item: OutboxItem) -> str | None:
        """Deliver ``item``; return the provider's id for the message, if it gives one."""


def _check(response: httpx.Response, robot: bool) -> None:
    if response.status_code == 429 or response.status_code >= 500:
        raise DeliveryFailed(f"HTTP {response.status_code}", retryable=True)
    if response.status_code >= 300:
        raise DeliveryFailed(f"HTTP {response.status_code}: {response.text[:120]}", retryable=False)
    if robot:
        try:
            code = response.json().get("errcode", 0)
        except ValueError as exc:
            raise DeliveryFailed("robot answered non-JSON", retryable=True) from exc
        if code != 0:
            # 45009 / 130101: the robot's per-minute limit; anything else is our mistake
            raise DeliveryFailed(f"robot errcode {code}", retryable=code in (45009, 130101))


async def _post(client: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str],
                timeout_s: float) -> httpx.Response:
    try:
        return await client.post(url, content=body, headers=dict(headers), timeout=timeout_s)
    except httpx.TimeoutException as exc:
        raise DeliveryFailed(f"timeout after {timeout_s} s", retryable=True) from exc
    except httpx.TransportError as exc:
        raise DeliveryFailed(f"transport error: {type(exc).__name__}", retryable=True) from exc


class SmsWebhook:
    """The SMS relay webhook: signed JSON POST with an idempotency key."""

    def __init__(self, settings: SmsSettings) -> None:
        if settings.url is None:
            raise WeijianError("[sms] url is not set")
        self.url = settings.url
        self.secret = settings.secret.get_secret_value().encode() if settings.secret else b""
        self.timeout_s = settings.timeout_s

    async def send(self, client: httpx.AsyncClient, item: OutboxItem) -> None:
        """POST the message to the relay."""
        body = json.dumps(item.payload, ensure_ascii=False, sort_keys=True).encode()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: webhook_signature(self.secret, stamp, body),
            TIMESTAMP_HEADER: str(stamp),
            "Idempotency-Key": item.idem_key,
        }
        _check(await _post(client, self.url, body, headers, self.timeout_s), robot=False)


class WeComRobot:
    """A WeCom (企业微信) group robot: ``{"msgtype": "text", "text": {"content": ...}}``."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s

    async def send(self, client: httpx.AsyncClient, item: OutboxItem) -> None:
        """POST the text to the robot's webhook (its key is in the URL)."""
        body = json.dumps({"msgtype": "text", "text": {"content": item.payload["text"]}},
                          ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        _check(await _post(client, self.url, body, headers, self.timeout_s), robot=True)


class DingTalkRobot:
    r"""A DingTalk (钉钉) group robot with 加签 signing.

    ``timestamp`` (ms) and ``sign`` go in the URL, with
    ``sign = urlencode(base64(HMAC-SHA256(secret, f"{timestamp}\n{secret}")))``.
    """

    def __init__(self, url: str, secret: str | None, timeout_s: float,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.clock_ms = clock_ms

    def signed_url(self) -> str:
        """The webhook URL with the current timestamp and signature."""
        if not self.secret:
            return self.url
        ts = self.clock_ms()
        digest = hmac.new(self.secret.encode(), f"{ts}\n{self.secret}".encode(), hashlib.sha256).digest()
        sign = urllib.parse.quote_plus(base64.b64encode(digest))
        return f"{self.url}{'&' if '?' in self.url else '?'}timestamp={ts}&sign={sign}"

    async def send(self, client: httpx.AsyncClient, item: OutboxItem) -> None:
        """POST the text to the robot."""
        body = json.dumps({"msgtype": "text", "text": {"content": item.payload["text"]}},
                          ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        _check(await _post(client, self.signed_url(), body, headers, self.timeout_s), robot=True)


class OutboxWorker:
    """Sends due outbox items; records every outcome in the delivery log.

    Bounded concurrency, exponential backoff with jitter, a per-recipient rate limit.

    Args:
        store: the alerts database.
        channels: notifier per channel name.
        settings: ``[alerts]`` (retry and rate settings).
        now: the clock (injectable).
        rand: a source of uniform [0, 1) numbers for jitter (injectable).
        worker_id: who claims outbox items (``claimed_by``); unique among the workers on one
            database. Default: ``<hostname>-<pid>``.
    """

    def __init__(self, store: Store, channels: Mapping[str, Notifier], settings: AlertsSettings,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 rand: Callable[[], float] = random.random, *, worker_id: str | None = None) -> None:
        self.store = store
        self.worker_id = (worker_id or f"{socket.gethostname()}-{os.getpid()}")[:64]
        self.channels = channels
        self.settings = settings
        self.now = now
        self.rand = rand
        self.delivered = 0
        self.failed_attempts = 0
        self._last_error: dict[str, str] = {}
        self._budget_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.folded = 0  # items folded into summaries (over a channel's budget)
        self._folded_seen = -1
        self._summaries_at = datetime.min.replace(tzinfo=UTC)
        self.wake = asyncio.Event()  # set through poke() when the service queues messages
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop run() runs on
        self.degraded = False  # the outbox could not be read at the last try

    def backoff(self, attempts: int) -> timedelta:
        """Delay before the next try after ``attempts`` failed tries (:class:`weijian.backoff.Backoff`).

        ``retry_initial_s`` doubling up to ``retry_max_s``, shortened by up to ``retry_jitter``
        of itself at random: never longer than ``retry_max_s``.
        """
        s = self.settings
        backoff = Backoff(s.retry_initial_s, s.retry_max_s, s.retry_jitter, self.rand)
        return timedelta(seconds=backoff.delay(attempts))

    async def run_once(self, client: httpx.AsyncClient) -> int:
        """Claim due items and try each once; returns how many were tried.

        Claimed items are ``sending`` until settled, so another worker on the same database
        does not send them too; an item whose worker dies mid-send is claimed again once the
        store's lease runs out.
        """
        now = self.now()
        # Folded items wait for a summary: look for them when this worker folded some, or every
        # poll interval (another worker may have), not before every send.
        if self.folded != self._folded_seen or now - self._summaries_at >= timedelta(
                seconds=self.settings.outbox_poll_s):
            self._folded_seen, self._summaries_at = self.folded, now
            await self._summaries(now)
        # A few at a time, so that every claimed item is sent well within the claim's lease.
        batch = 2 * self.settings.outbox_concurrency
        items = await asyncio.to_thread(self.store.claim_notifications, now, batch, self.worker_id)
        if not items:
            return 0
        limit = asyncio.Semaphore(self.settings.outbox_concurrency)

        async def one(item: OutboxItem) -> None:
            async with limit:
                try:
                    await self._deliver(client, item)
                except Exception as exc:  # the database failed while settling: the claim expires
                    self.degraded = True
                    log.error("notify.settle_failed", extra={"item": item.id, "error": repr(exc)})

        async with asyncio.TaskGroup() as tg:
            for item in items:
                tg.create_task(one(item), name=f"notify-{item.id}")
        return len(items)

    def _budget(self, channel: str) -> tuple[int, timedelta] | None:
        """How many messages a recipient of ``channel`` may get, and in what window."""
        if channel in ("wecom", "dingtalk"):
            return self.settings.robot_per_min, timedelta(minutes=1)
        if channel == "sms":
            return self.settings.sms_per_number_per_day, timedelta(days=1)
        return None

    async def _summaries(self, now: datetime) -> None:
        """Send what was folded, as one summary per recipient, when its budget has a slot."""
        folded = await asyncio.to_thread(self.store.folded)
        by_recipient: dict[tuple[str, str], list[OutboxItem]] = {}
        for item in folded:
            by_recipient.setdefault((item.channel, item.recipient), []).append(item)
        for (channel, recipient), items in by_recipient.items():
            budget = self._budget(channel)
            if budget is None:
                continue
            if await asyncio.to_thread(self.store.summary_waiting, channel, recipient):
                continue  # one summary at a time: the one queued takes the slot
            used = await asyncio.to_thread(self.store.delivered_recently, recipient, now - budget[1])
            if used >= budget[0]:
                continue  # the window is full; the summary waits for a slot
            await asyncio.to_thread(self.store.summarize, _summary(channel, recipient, items, now),
                                    [i.id for i in items], now)

    async def _deliver(self, client: httpx.AsyncClient, item: OutboxItem) -> None:
        budget = self._budget(item.channel)
        if budget is None:
            await self._send(client, item)
            return
        # One check-and-send at a time per recipient in this worker, so the count is exact.
        lock = self._budget_locks.setdefault((item.channel, item.recipient), asyncio.Lock())
        async with lock:
            now = self.now()
            # One query for both windows: the channel's budget and, for SMS, the hourly rate.
            used, last_hour = await asyncio.to_thread(self.store.delivered_counts, item.recipient,
                                                      [now - budget[1], now - timedelta(hours=1)])
            # The last slot of each window is kept for the summary of what does not fit.
            if used >= budget[0] - 1 and not item.idem_key.startswith("summary:"):
                self.folded += 1
                await asyncio.to_thread(self.store.mark_delivery, item.id, DeliveryStatus.FOLDED, now,
                                        error="over_budget", count_attempt=False)
                return
            await self._send(client, item, last_hour)

    async def _send(self, client: httpx.AsyncClient, item: OutboxItem, last_hour: int | None = None) -> None:
        now = self.now()
        if item.channel == "sms":
            sent = last_hour if last_hour is not None else await asyncio.to_thread(
                self.store.delivered_recently, item.recipient, now - timedelta(hours=1))
            if sent >= self.settings.rate_per_recipient_per_h:
                # Deferred, not dropped: tried again once the hour's window has room.
                await asyncio.to_thread(self.store.mark_delivery, item.id, DeliveryStatus.PENDING, now,
                                        error="rate_limited", retry_at=now + timedelta(minutes=5),
                                        count_attempt=False)
                return
        notifier = self.channels.get(item.channel)
        if notifier is None:
            await asyncio.to_thread(self.store.mark_delivery, item.id, DeliveryStatus.FAILED, now,
                                    error=f"channel {item.channel!r} is not configured")
            return
        try:
            provider_ref = await notifier.send(client, item)
        except DeliveryFailed as exc:
            self.failed_attempts += 1
            attempts = item.attempts + 1
            give_up = not exc.retryable or (0 < self.settings.max_attempts <= attempts)
            if self._last_error.get(item.channel) != str(exc):  # log changes, not repetitions
                log.warning("notify.attempt_failed", extra={
                    "channel": item.channel, "error": str(exc), "attempts": attempts, "give_up": give_up})
                self._last_error[item.channel] = str(exc)
            await asyncio.to_thread(
                self.store.mark_delivery, item.id,
                DeliveryStatus.FAILED if give_up else DeliveryStatus.PENDING, now,
                error=str(exc), retry_at=None if give_up else now + self.backoff(attempts),
            )
            return
        self._last_error.pop(item.channel, None)
        self.delivered += 1
        await asyncio.to_thread(self.store.mark_delivery, item.id, DeliveryStatus.DELIVERED, self.now(),
                                provider_ref=provider_ref or None)

    def poke(self) -> None:
        """Wake :meth:`run` now: something was queued. Safe to call from any thread."""
        loop = self._loop
        if loop is None:
            self.wake.set()  # not running yet: the first pass looks anyway
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.wake.set()
            return
        # A closed loop (the stage stopped): the rows wait in the outbox for the next worker.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.wake.set)

    async def run(self, client: httpx.AsyncClient) -> None:
        """Deliver forever (until cancelled), polling the outbox every ``outbox_poll_s``."""
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                self.degraded = False  # set again by a delivery that cannot be settled
                tried = await self.run_once(client)
            except Exception as exc:  # the outbox fails alone: never the process it runs in
                if not self.degraded:  # log changes, not repetitions
                    log.error("notify.outbox_unavailable", extra={"error": str(exc)})
                self.degraded = True
                tried = 0
            if not tried:
                # Sleep until the service queues something, or the poll interval passes
                # (retries fall due with time alone).
                try:
                    async with asyncio.timeout(self.settings.outbox_poll_s):
                        await self.wake.wait()
                except TimeoutError:
                    pass
                self.wake.clear()


def build_channels(sms: SmsSettings, alerts: AlertsSettings) -> dict[str, Notifier]:
    """The configured channels."""
    out: dict[str, Notifier] = {}
    if sms.provider == "aliyun":
        from alerts.sms_providers import AliyunSms

        out["sms"] = AliyunSms(sms)
    elif sms.provider == "tencent":
        from alerts.sms_providers import TencentSms

        out["sms"] = TencentSms(sms)
    elif sms.url:
        out["sms"] = SmsWebhook(sms)
    if alerts.wecom_url:
        out["wecom"] = WeComRobot(alerts.wecom_url, sms.timeout_s)
    if alerts.dingtalk_url:
        secret = alerts.dingtalk_secret.get_secret_value() if alerts.dingtalk_secret else None
        out["dingtalk"] = DingTalkRobot(alerts.dingtalk_url, secret, sms.timeout_s)
    return out


def _summary(channel: str, recipient: str, items: list[OutboxItem], now: datetime) -> OutboxItem:
    """One message standing for ``items``, which went over the channel's budget."""
    first = items[0].payload
    lines = [str(i.payload.get("text", "")) for i in items[:3]]
    more = f"；另有{len(items) - 3}条" if len(items) > 3 else ""
    text = (f"【卫监汇总】超出发送限额未单独发送的告警通知{len(items)}条：" + "；".join(lines) + more
            + "。请登录值班系统查看全部。")
    key = f"summary:{channel}:{recipient}:{items[0].id}-{items[-1].id}"
    alert_ids = [a for i in items for a in (i.payload.get("alert_ids") or [i.alert_id]) if a]
    payload: dict[str, Any] = {
        "reason": "summary", "text": text, "count": len(items), "alert_ids": alert_ids,
        "at": now.isoformat(), "idempotency_key": key, "site_id": first.get("site_id"),
        "severity": first.get("severity"), "level": first.get("level"),
    }
    if channel == "sms":
        payload["to"] = recipient
    return OutboxItem(key, channel, recipient, payload, items[0].alert_id)

