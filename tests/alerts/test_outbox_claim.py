"""Claims across processes on a real PostgreSQL (and SQLite): outbox items claimed before
sending, so two workers POST each notification once; a dead worker's claim taken over after
its lease; an overdue task escalated once by two stores; writes fenced by an advisory lock;
the engine state saved in the same transaction."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from alerts.notify import OutboxWorker, build_channels
from alerts.store import (
    DeliveryStatus,
    Fence,
    NewTask,
    OutboxItem,
    PartitionLost,
    Store,
    audit_table,
    engine_state_table,
    outbox_table,
    tasks_table,
)
from tests.alerts.conftest import Receiver, make_settings
from tests.conftest import POSTGRES_DSN

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def _items(n: int, tag: str = "") -> list[OutboxItem]:
    out = []
    for i in range(n):
        key = f"alert-{i}:firing:1:0:sms:1390000{i:04d}{tag}"
        out.append(OutboxItem(key, "sms", f"1390000{i:04d}",
                              {"text": f"【卫监警告】{i}", "to": f"1390000{i:04d}", "idempotency_key": key},
                              f"alert-{i}"))
    return out


def _count(store: Store, table: object) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


async def test_two_workers_on_one_postgresql_post_each_notification_once(
    fresh_pg_url: str, receiver: Receiver
) -> None:
    settings = make_settings(fresh_pg_url, receiver.url, rate_per_recipient_per_h=1000)
    a, b = Store(fresh_pg_url), Store(fresh_pg_url)
    items = _items(200)
    a.record([], [], items)
    channels = build_channels(settings.sms, settings.alerts)
    workers = [OutboxWorker(a, channels, settings.alerts, worker_id="worker-a"),
               OutboxWorker(b, channels, settings.alerts, worker_id="worker-b")]
    try:
        async with httpx.AsyncClient() as client, asyncio.timeout(60):
            while a.pending_count():
                await asyncio.gather(*(w.run_once(client) for w in workers))
        posts = Counter(receiver.keys())
        assert receiver.posts == 200
        assert set(posts) == {i.idem_key for i in items}
        assert set(posts.values()) == {1}  # every key POSTed exactly once
        log = a.deliveries(limit=500)
        assert {d["status"] for d in log} == {"delivered"}
        assert {d["attempts"] for d in log} == {1}
        assert {d["claimed_by"] for d in log} <= {"worker-a", "worker-b"}
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("update_returning", [True, False], ids=["one-statement", "row-by-row"])
def test_concurrent_claimers_get_disjoint_items(url: str, update_returning: bool) -> None:
    stores = [Store(url) for _ in range(4)]
    for store in stores:
        store._update_returning = update_returning and store._update_returning
    stores[0].record([], [], _items(300), now=T0)
    claimed: list[list[int]] = [[] for _ in stores]
    start = threading.Barrier(len(stores))

    def claim_all(i: int) -> None:
        start.wait()
        while batch := stores[i].claim_notifications(T0, random.randint(1, 9), f"w{i}"):
            claimed[i].extend(item.id for item in batch)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    every = [item_id for ids in claimed for item_id in ids]
    try:
        assert len(every) == 300
        assert len(set(every)) == 300  # no item claimed twice
        log = stores[0].deliveries(limit=500)
        assert {d["status"] for d in log} == {DeliveryStatus.SENDING.value}
        owner = {item_id: f"w{i}" for i, ids in enumerate(claimed) for item_id in ids}
        assert all(d["claimed_by"] == owner[d["id"]] for d in log)
        assert stores[0].pending_count() == 300  # sending still counts as not yet delivered
    finally:
        for store in stores:
            store.close()


async def test_a_dead_workers_claim_is_taken_over_after_the_lease(url: str, receiver: Receiver) -> None:
    settings = make_settings(url, receiver.url)
    store = Store(url)
    now = datetime.now(UTC)
    dead, busy = _items(3, ":dead"), _items(2, ":busy")
    try:
        store.record([], [], dead, now=now - timedelta(seconds=400))
        assert len(store.claim_notifications(now - timedelta(seconds=400), 10, "died-mid-send")) == 3
        store.record([], [], busy, now=now - timedelta(seconds=100))
        assert len(store.claim_notifications(now - timedelta(seconds=100), 10, "still-sending")) == 2
        assert store.claim_notifications(now - timedelta(seconds=150), 10, "too-early") == []  # 250 s old

        worker = OutboxWorker(store, build_channels(settings.sms, settings.alerts), settings.alerts,
                              now=lambda: now, worker_id="survivor")
        async with httpx.AsyncClient() as client:
            assert await worker.run_once(client) == 3  # the 400 s old claims; the 100 s old ones are live
        assert sorted(receiver.keys()) == sorted(i.idem_key for i in dead)
        rows = {d["idem_key"]: d for d in store.deliveries()}
        assert {rows[i.idem_key]["status"] for i in dead} == {"delivered"}
        assert {rows[i.idem_key]["claimed_by"] for i in dead} == {"survivor"}
        assert {(rows[i.idem_key]["status"], rows[i.idem_key]["claimed_by"]) for i in busy} == {
            ("sending", "still-sending")}
    finally:
        store.close()


async def test_a_rate_limited_claim_goes_back_to_pending(sqlite_url: str, receiver: Receiver) -> None:
    settings = make_settings(sqlite_url, receiver.url, rate_per_recipient_per_h=1)
    store = Store(sqlite_url)
    same = [OutboxItem(f"k{i}", "sms", "13800000001", {"text": "x", "to": "13800000001",
                                                       "idempotency_key": f"k{i}"}) for i in range(2)]
    store.record([], [], same)
    worker = OutboxWorker(store, build_channels(settings.sms, settings.alerts),
                          settings.alerts.model_copy(update={"outbox_concurrency": 1}))
    async with httpx.AsyncClient() as client:
        assert await worker.run_once(client) == 2
    rows = {d["idem_key"]: d for d in store.deliveries()}
    assert len(receiver.keys()) == 1
    deferred = next(r for r in rows.values() if r["status"] != "delivered")
    assert (deferred["status"], deferred["last_error"]) == ("pending", "rate_limited")
    assert deferred["attempts"] == 0
    store.close()


def _open_task(store: Store) -> int:
    [task_id] = store.record([], [NewTask(
        alert_id="a-1", district="chengguan", site_id="yc-dw-001", device_id="tu-01",
        rule_id="gb5749.turbidity", severity="warning", title="浊度超标", description="d",
        due_at=T0 + timedelta(hours=2))], [], now=T0)
    return task_id


def test_two_stores_escalating_one_overdue_task_queue_its_messages_once(url: str) -> None:
    a, b = Store(url), Store(url)
    task_id = _open_task(a)
    late = T0 + timedelta(hours=3)
    results: list[bool] = []
    start = threading.Barrier(2)

    def escalate(store: Store, tag: str) -> None:
        start.wait()
        # different keys per caller: only the conditional update can keep the second one out
        results.append(store.mark_escalated(task_id, late, _items(3, f":escalated-by-{tag}")))

    threads = [threading.Thread(target=escalate, args=(s, tag)) for s, tag in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert sorted(results) == [False, True]
        assert _count(a, outbox_table) == 3
        trail = [line["action"] for line in a.task(task_id)["audit"]]  # type: ignore[index]
        assert trail.count("overdue_escalated") == 1
        assert a.overdue_tasks(late + timedelta(hours=1)) == []
        assert a.mark_escalated(task_id, late, _items(1, ":again")) is False
        assert _count(a, outbox_table) == 3
    finally:
        a.close()
        b.close()


def test_a_fenced_write_needs_the_advisory_lock_held_by_its_pid(fresh_pg_url: str) -> None:
    store = Store(fresh_pg_url)
    classid, objid = -7, random.randint(1, 2**31 - 1)  # negative: pg_locks shows it as 4294967289
    holder = psycopg.connect(POSTGRES_DSN, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s::int4, %s::int4)", (classid, objid))
        row = holder.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        pid = int(row[0])
        store.record([], [], _items(1, ":p1"), state=("partition-1", '{"open": 1}'),
                     fence=Fence(classid, objid, pid), now=T0)
        assert store.engine_states() == {"partition-1": '{"open": 1}'}

        def counts() -> tuple[int, int, int]:
            return _count(store, outbox_table), _count(store, tasks_table), _count(store, audit_table)

        before = counts()
        for wrong in (Fence(classid, objid, pid + 1), Fence(classid, objid + 1, pid), Fence(7, objid, pid)):
            with pytest.raises(PartitionLost):
                store.record([], [], _items(2, ":wrong"), state=("partition-1", '{"open": 2}'), fence=wrong)
        holder.close()  # the session ends: its lock goes with it
        with pytest.raises(PartitionLost):
            store.record([], [NewTask(alert_id="a-9", district="chengguan", site_id="s", device_id="d",
                                      rule_id="r", severity="warning", title="t", description="d",
                                      due_at=T0)],
                         _items(2, ":lost"), state=("partition-1", '{"open": 3}'),
                         fence=Fence(classid, objid, pid))
        assert counts() == before  # nothing written
        assert store.engine_states() == {"partition-1": '{"open": 1}'}
    finally:
        holder.close()
        store.close()


def test_engine_state_is_saved_alone_and_replaced(url: str) -> None:
    store = Store(url)
    try:
        # the fence is ignored on SQLite; on PostgreSQL none is given here
        fence = Fence(1, 2, 3) if url.startswith("sqlite") else None
        assert store.record([], [], [], state=("p0", json.dumps({"v": 1})), now=T0, fence=fence) == []
        store.record([], [], [], state=("p1", json.dumps({"v": 1})), now=T0)
        store.record([], [], [], state=("p0", json.dumps({"v": 2})), now=T0 + timedelta(seconds=1))
        assert store.engine_states() == {"p0": '{"v": 2}', "p1": '{"v": 1}'}
        assert _count(store, engine_state_table) == 2
    finally:
        store.close()
