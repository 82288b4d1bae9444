"""Notifications against a real local receiver: down (500, then refusing connections), then
up: retried until delivered, none lost, none doubled; DingTalk signing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import urllib.parse

import httpx

from alerts.notify import DingTalkRobot, OutboxWorker, build_channels
from alerts.store import OutboxItem, Store
from tests.alerts.conftest import Receiver, make_settings


def _items(n: int) -> list[OutboxItem]:
    return [OutboxItem(f"alert-{i}:firing:1:0:sms:1380000{i:04d}", "sms", f"1380000{i:04d}",
                       {"text": f"【卫监警告】测试{i}", "to": f"1380000{i:04d}",
                        "idempotency_key": f"alert-{i}:firing:1:0:sms:1380000{i:04d}"}, f"alert-{i}")
            for i in range(n)]


async def test_receiver_down_then_up_nothing_lost_nothing_doubled(
    sqlite_url: str, receiver: Receiver
) -> None:
    settings = make_settings(sqlite_url, receiver.url)
    store = Store(sqlite_url)
    items = _items(30)
    store.record([], [], items)
    store.record([], [], items[:10])  # queued twice (e.g. after a crash): the key keeps one
    worker = OutboxWorker(store, build_channels(settings.sms, settings.alerts), settings.alerts)
    receiver.fail_with = 500
    async with httpx.AsyncClient() as client, asyncio.TaskGroup() as tg:
        task = tg.create_task(worker.run(client), name="outbox-under-test")
        async with asyncio.timeout(10):
            while receiver.posts < 60:  # noqa: ASYNC110 - counted by the receiver thread
                await asyncio.sleep(0.02)
        assert receiver.received == []
        port = receiver.port
        receiver.stop()  # now the port refuses connections
        await asyncio.sleep(0.5)
        assert store.pending_count() == 30
        receiver.fail_with = None
        receiver.port = port
        receiver.start()
        async with asyncio.timeout(15):
            while store.pending_count():  # noqa: ASYNC110 - the database is the truth
                await asyncio.sleep(0.05)
        task.cancel()
    keys = receiver.keys()
    assert sorted(keys) == sorted(i.idem_key for i in items)  # none lost, none doubled
    log = store.deliveries(limit=100)
    assert all(d["status"] == "delivered" and d["attempts"] >= 2 for d in log)
    # The first 60 posts were refused with 500 by the relay, not for a bad signature.
    assert receiver.posts >= 90 and receiver.bad_signatures == 0
    store.close()


async def test_rate_limit_defers_instead_of_dropping(sqlite_url: str, receiver: Receiver) -> None:
    settings = make_settings(sqlite_url, receiver.url, rate_per_recipient_per_h=2)
    store = Store(sqlite_url)
    same = [OutboxItem(f"k{i}", "sms", "13800000001", {"text": "x", "to": "13800000001",
                                                       "idempotency_key": f"k{i}"}) for i in range(4)]
    store.record([], [], same)
    worker = OutboxWorker(store, build_channels(settings.sms, settings.alerts), settings.alerts)
    worker.settings = settings.alerts.model_copy(update={"outbox_concurrency": 1})
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            await worker.run_once(client)
    assert len(receiver.received) == 2
    assert store.pending_count() == 2
    assert {d["last_error"] for d in store.deliveries() if d["status"] == "pending"} == {"rate_limited"}
    store.close()


def test_backoff_doubles_to_its_cap_and_jitter_only_shortens_it(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, "http://127.0.0.1:9/", retry_initial_s=1, retry_max_s=30,
                             retry_jitter=0.5)
    store = Store(sqlite_url)
    none = OutboxWorker(store, {}, settings.alerts, rand=lambda: 0.0)
    most = OutboxWorker(store, {}, settings.alerts, rand=lambda: 0.999999)
    assert [none.backoff(n).total_seconds() for n in (1, 2, 3, 5, 6, 10)] == [1, 2, 4, 16, 30, 30]
    assert [round(most.backoff(n).total_seconds(), 3) for n in (1, 5, 10)] == [0.5, 8.0, 15.0]
    # Whatever the random draw, no delay exceeds retry_max_s (30 s), not even with jitter.
    assert all(w.backoff(n).total_seconds() <= 30 for w in (none, most) for n in range(1, 80))
    store.close()


def test_dingtalk_signature_per_its_docs() -> None:
    robot = DingTalkRobot("https://oapi.example/robot/send?access_token=abc", "SECxyz", 5,
                          clock_ms=lambda: 1_700_000_000_000)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(robot.signed_url()).query)
    digest = hmac.new(b"SECxyz", b"1700000000000\nSECxyz", hashlib.sha256).digest()
    assert query["timestamp"] == ["1700000000000"]
    assert query["sign"] == [base64.b64encode(digest).decode()]
    assert query["access_token"] == ["abc"]
