"""Several `weijian ingest run` processes, a private PostgreSQL stopped at will, Mosquitto restarted.

Everything here runs the real programs against real Mosquitto, InfluxDB and PostgreSQL, and
counts what arrived: points in InfluxDB, alert and task rows, POSTs at the SMS receiver.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from ingest.coordinate import lock_key
from ingest.partitions import partition_registry
from tests.alerts.conftest import SECRET, Receiver
from tests.ingest.cluster import (
    REPO,
    IngestProcess,
    PrivatePostgres,
    Publisher,
    fridge_readings,
    fridge_registry,
    ingest_config,
    private_postgres,
    recent_start,
    wait_for,
)
from tests.ingest.conftest import count_points
from weijian.demo.local_services import Broker, Influx, free_port
from weijian.registry import load_registry

LEVEL1 = ["13800000002", "13800000004", "13800000005"]  # fridge_registry's handler and alarm contacts
HOT = {"cc-01-00", "cc-05-02", "cc-09-03"}  # three fridges above 8 °C, on three gateways


@pytest.fixture(scope="module")
def pg() -> Iterator[PrivatePostgres]:
    server = private_postgres()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):  # already stopped by a failed test
            server.stop()


@pytest.fixture
def tasks_url(pg: PrivatePostgres) -> str:
    """A fresh database of the private cluster for this test."""
    name = f"t{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return list(conn.execute(sql).fetchall())  # type: ignore[arg-type]


def _deployment(tmp_path: Path, names: list[str], **kw: object) -> list[IngestProcess]:
    return [IngestProcess(ingest_config(tmp_path, n, **kw), tmp_path / f"{n}.log") for n in names]  # type: ignore[arg-type]


def _check_one_alert_per_breach(url: str, start: object, receiver: Receiver) -> None:
    groups = _rows(url, "SELECT site_id, device_id, rule_id, count(*) FROM alerts_alerts"
                        " GROUP BY site_id, device_id, rule_id")
    assert all(n == 1 for *_, n in groups), groups  # one evaluator per device: never two alerts
    hot = _rows(url, "SELECT site_id, alert_id, since, fired_at FROM alerts_alerts"
                     " WHERE rule_id = 'cc-excursion-high' ORDER BY site_id")
    assert {r[0] for r in hot} == HOT
    for _, _, since, fired in hot:  # judged in order from the first reading: right time, once
        assert since == start and fired == start + timedelta(minutes=10)  # type: ignore[operator]
    tasks = _rows(url, "SELECT alert_id, count(*) FROM alerts_tasks GROUP BY alert_id")
    assert all(n == 1 for _, n in tasks)
    assert {str(r[1]) for r in hot} <= {str(a) for a, _ in tasks}
    keys = receiver.keys()
    assert len(keys) == len(set(keys)), Counter(keys).most_common(3)  # each notification once
    told = Counter((m["alert_id"], m["to"]) for m in receiver.received)
    for _, alert_id, _, _ in hot:
        # The unit's three level-1 people (handler and two alarm contacts), each told once.
        assert sorted(to for (a, to), n in told.items() if a == alert_id and n == 1) == LEVEL1, told


def test_three_processes_judge_each_device_once_and_take_over_a_killed_one(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str,
    tasks_url: str, receiver: Receiver,
) -> None:
    registry_path = tmp_path / "registry.toml"
    devices = fridge_registry(registry_path, gateways=13, per_gateway=4)
    nonempty = {p.index for p in partition_registry(load_registry(registry_path), 8) if p.sites}
    minutes = 40
    start = recent_start(minutes)
    messages = fridge_readings(topic_root, devices, HOT, minutes, start)
    procs = _deployment(
        tmp_path, ["a", "b", "c"], broker=mosquitto, influx=influxd, database=influx_db, root=topic_root,
        registry=registry_path, tasks_url=tasks_url, sms_url=receiver.url, secret=SECRET.decode(),
        deployment=f"cl-{topic_root.split('/')[0]}",
    )
    try:
        for p in procs:
            p.start()
        wait_for(lambda: all(p.partitions() for p in procs)
                 and sorted(i for p in procs for i in p.partitions()) == sorted(nonempty),
                 60, "three processes to split the partitions")
        publisher = Publisher(mosquitto, messages, rate_per_s=150)
        publisher.start()
        wait_for(lambda: publisher.sent > 300, 30, "the breaches to be pending")  # fire after the kill
        victim = max(procs, key=lambda p: len(p.partitions()))
        orphaned = set(victim.partitions())
        victim.kill()
        killed_at = time.monotonic()
        survivors = [p for p in procs if p is not victim]
        wait_for(lambda: orphaned <= {i for p in survivors for i in p.partitions()}, 30,
                 "the survivors to take the killed process's partitions over")
        assert time.monotonic() - killed_at < 30
        publisher.join()
        assert len(publisher.acked) == len(messages)
        wait_for(lambda: count_points(influxd, influx_db) == len(messages), 60, "every reading stored")
        wait_for(lambda: len(_rows(tasks_url, "SELECT 1 FROM alerts_tasks t JOIN alerts_alerts a"
                                              " USING (alert_id) WHERE a.rule_id = 'cc-excursion-high'")) == 3
                 and len(receiver.received) >= 3 * len(LEVEL1), 60, "three tasks and their SMS")
        victim.start()  # rejoins without a manual step and is given work again
        wait_for(lambda: bool(victim.partitions()), 60, "the restarted process to hold partitions")
        time.sleep(2)  # any duplicate judging or second delivery would show now
        for p in procs:
            assert p.stop() == 0
    finally:
        for p in procs:
            p.kill()
    assert count_points(influxd, influx_db) == len(messages)
    _check_one_alert_per_breach(tasks_url, start, receiver)


def test_two_processes_started_at_once_on_an_empty_database_both_run(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str,
    tasks_url: str, receiver: Receiver,
) -> None:
    registry_path = tmp_path / "registry.toml"
    fridge_registry(registry_path, gateways=6, per_gateway=2)
    procs = _deployment(
        tmp_path, ["a", "b"], broker=mosquitto, influx=influxd, database=influx_db, root=topic_root,
        registry=registry_path, tasks_url=tasks_url, sms_url=receiver.url, secret=SECRET.decode(),
        deployment=f"st-{topic_root.split('/')[0]}",
    )
    try:
        for p in procs:
            p.start()
        wait_for(lambda: all(p.health().get("ready") and p.partitions() for p in procs), 60,
                 "both processes to run with partitions of their own")
        for p in procs:
            assert p.stop() == 0
    finally:
        for p in procs:
            p.kill()
    assert _rows(tasks_url, "SELECT version_num FROM alembic_version") == [("0005",)]


def _members(url: str, deployment: str) -> int:
    """Member locks of ``deployment`` in the database of ``url`` (what the coordinator counts)."""
    sql = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted"
           " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
           f" AND classid::bigint = {lock_key(deployment + '/members') & 0xFFFFFFFF}")
    [(n,)] = _rows(url, sql)
    return int(n)  # type: ignore[call-overload]


def _others_connected(url: str) -> int:
    """Connections to the database of ``url`` other than this query's own."""
    [(n,)] = _rows(url, "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    return int(n)  # type: ignore[call-overload]


def test_ingest_run_connects_while_its_registry_loads_but_is_counted_only_once_started(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str,
    tasks_url: str, receiver: Receiver,
) -> None:
    # `ingest run` connects to PostgreSQL before loading its registry, so the wait before
    # claiming (90% of claim_interval_s from the connection) passes meanwhile. Its member lock,
    # which the running processes count and give partitions up for, comes only once it has
    # started: a process whose start hangs or fails takes nothing from them. The registry here
    # is a FIFO: loading it waits until the test writes it.
    source = tmp_path / "source.toml"
    fridge_registry(source, gateways=3, per_gateway=2)
    fifo = tmp_path / "registry.toml"
    os.mkfifo(fifo)
    deployment = f"jn-{topic_root.split('/')[0]}"
    [proc] = _deployment(
        tmp_path, ["a"], broker=mosquitto, influx=influxd, database=influx_db, root=topic_root,
        registry=fifo, tasks_url=tasks_url, sms_url=receiver.url, secret=SECRET.decode(),
        deployment=deployment, claim_interval_s=10.0,
    )
    try:
        proc.start()
        wait_for(lambda: _others_connected(tasks_url) == 1, 60, "its connection before the registry")
        time.sleep(9)  # the wait after connecting (0.9 x 10 s) passes while the registry "loads"
        assert _members(tasks_url, deployment) == 0  # still starting: counted by nobody
        assert proc.health() == {}  # alive, but nothing serves yet
        began = time.monotonic()
        with fifo.open("w", encoding="utf-8") as pipe:
            pipe.write(source.read_text(encoding="utf-8"))
        wait_for(lambda: _members(tasks_url, deployment) == 1, 60, "the member lock once started")
        wait_for(lambda: proc.partitions(), 60, "the partitions claimed")
        # Half an interval (5 s) after the member lock, not 90% of one after loading.
        assert time.monotonic() - began < 8
        wait_for(lambda: proc.health().get("ready"), 60, "the sessions subscribed")
        assert proc.stop() == 0
    finally:
        proc.kill()
    assert _members(tasks_url, deployment) == 0


def test_postgresql_down_for_a_minute_storage_goes_on_and_every_reading_is_judged_after(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str,
    pg: PrivatePostgres, tasks_url: str, receiver: Receiver,
) -> None:
    registry_path = tmp_path / "registry.toml"
    devices = fridge_registry(registry_path, gateways=13, per_gateway=4)
    minutes = 60
    start = recent_start(minutes)
    messages = fridge_readings(topic_root, devices, HOT, minutes, start)
    procs = _deployment(
        tmp_path, ["a", "b"], broker=mosquitto, influx=influxd, database=influx_db, root=topic_root,
        registry=registry_path, tasks_url=tasks_url, sms_url=receiver.url, secret=SECRET.decode(),
        deployment=f"pg-{topic_root.split('/')[0]}",
    )
    try:
        for p in procs:
            p.start()
        wait_for(lambda: all(p.health().get("ready") for p in procs), 60, "two processes ready")
        publisher = Publisher(mosquitto, messages, rate_per_s=len(messages) / 75)  # 75 s of stream
        publisher.start()
        wait_for(lambda: publisher.sent > 300, 30, "the stream to be under way")
        pg.stop()
        try:
            during = [count_points(influxd, influx_db)]
            for _ in range(3):
                time.sleep(18)
                during.append(count_points(influxd, influx_db))
            assert during == sorted(set(during)), during  # storage went on, growing, without PostgreSQL
            assert any("alerts" in p.health().get("degraded", []) for p in procs)
        finally:
            pg.start()
        publisher.join()
        wait_for(lambda: count_points(influxd, influx_db) == len(messages), 60, "every reading stored")

        def everything_judged() -> bool:
            rows = _rows(tasks_url, "SELECT state FROM alerts_engine_state")
            seen: dict[tuple[str, str], int] = {}
            for (state,) in rows:
                for s, d, us in json.loads(str(state))["last_seen"]:
                    seen[(s, d)] = max(seen.get((s, d), 0), us)
            final = int((start + timedelta(minutes=minutes - 1)).timestamp()) * 1_000_000
            return len(seen) == len(devices) and all(v == final for v in seen.values())

        wait_for(everything_judged, 90, "every device judged up to its last reading")
        wait_for(lambda: len(receiver.received) >= 3 * len(LEVEL1), 60, "the SMS of the three alerts")
        for p in procs:
            assert p.stop() == 0
    finally:
        for p in procs:
            p.kill()
    _check_one_alert_per_breach(tasks_url, start, receiver)


def test_mosquitto_restarted_twice_mid_stream_and_once_while_ingest_is_down_loses_nothing(
    tmp_path: Path, fresh_mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str,
    receiver: Receiver,
) -> None:
    registry_path = tmp_path / "registry.toml"
    devices = fridge_registry(registry_path, gateways=8, per_gateway=5)
    minutes = 150
    start = recent_start(minutes)
    messages = fridge_readings(topic_root, devices, set(), minutes, start)  # 6,000 readings
    first, rest = messages[:5000], messages[5000:]
    [proc] = _deployment(
        tmp_path, ["a"], broker=fresh_mosquitto, influx=influxd, database=influx_db, root=topic_root,
        registry=registry_path, tasks_url=f"sqlite:///{tmp_path / 'tasks.sqlite'}", sms_url=receiver.url,
        secret=SECRET.decode(), deployment=f"mq-{topic_root.split('/')[0]}", alerts=False,
    )
    try:
        proc.start()
        wait_for(lambda: proc.health().get("ready"), 60, "ingest ready")
        publisher = Publisher(fresh_mosquitto, first, rate_per_s=400)
        publisher.start()
        for threshold in (1500, 3500):  # two restarts with ingest up, mid-stream
            wait_for(lambda threshold=threshold: publisher.sent > threshold, 60, f"{threshold} sent")
            fresh_mosquitto.stop()
            fresh_mosquitto.start()
        publisher.join()
        wait_for(lambda: count_points(influxd, influx_db) >= len(publisher.acked), 60, "the first part")
        assert proc.stop() == 0
        late = Publisher(fresh_mosquitto, rest, rate_per_s=2000)  # while ingest is down
        late.start()
        late.join()
        fresh_mosquitto.stop()  # and the broker restarts before ingest comes back
        fresh_mosquitto.start()
        proc.start()
        acked = {first[i] for i in publisher.acked} | {rest[i] for i in late.acked}
        wait_for(lambda: count_points(influxd, influx_db) >= len(acked), 60, "the queued readings")
        assert proc.stop() == 0
    finally:
        proc.kill()
    assert len(acked) == len(messages)  # the publishers got every PUBACK through the restarts
    assert count_points(influxd, influx_db) == len(messages)


def test_the_task_api_answers_503_while_postgresql_is_down_and_recovers(
    tmp_path: Path, pg: PrivatePostgres, tasks_url: str
) -> None:
    port = free_port()
    conf = tmp_path / "api.toml"
    conf.write_text(
        f'[tasks]\nurl = "{tasks_url}"\n[alerts]\napi_port = {port}\ndb_timeout_s = 2.0\n'
        '[[alerts.teams]]\nname = "城关"\ntoken = "t0ken-chengguan"\ndistricts = ["d1"]\n', encoding="utf-8"
    )
    proc = subprocess.Popen([sys.executable, "-m", "weijian.cli", "tasks", "serve", "--config", str(conf)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=(tmp_path / "api.log").open("wb"))
    auth = {"Authorization": "Bearer t0ken-chengguan"}
    base = f"http://127.0.0.1:{port}"

    def status(path: str) -> int:
        assert proc.poll() is None, (tmp_path / "api.log").read_text()[-2000:]
        try:
            return httpx.get(base + path, headers=auth, timeout=10).status_code
        except httpx.HTTPError:
            return 0

    try:
        wait_for(lambda: status("/tasks") == 200, 30, "the API")
        pg.stop()
        try:
            assert status("/tasks") == 503  # degraded, not crashed
            assert status("/healthz") == 503
            assert status("/tasks/1") == 503
        finally:
            pg.start()
        wait_for(lambda: status("/tasks") == 200 and status("/healthz") == 200, 30, "the API to recover")
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def _backlog_drain(
    tmp_path: Path, broker: Broker, influx: Influx, database: str, root: str, tasks_url: str,
    receiver: Receiver, *, lock_state: bool,
) -> Iterator[tuple[IngestProcess, int, Callable[[], None]]]:
    """Ingest restarted onto a backlog of 7,200 readings (6 gateways, batches of 50).

    With ``lock_state`` the alerts' engine-state table is locked from before the start until
    the yielded ``unlock`` is called, so the alerts sessions cannot load their state (the
    database hangs). Yields the started process, the number of readings and ``unlock``.
    """
    registry_path = tmp_path / "registry.toml"
    devices = fridge_registry(registry_path, gateways=6, per_gateway=4)
    minutes = 300
    messages = fridge_readings(root, devices, set(), minutes, recent_start(minutes + 2))
    [proc] = _deployment(
        tmp_path, ["a"], broker=broker, influx=influx, database=database, root=root,
        registry=registry_path, tasks_url=tasks_url, sms_url=receiver.url, secret=SECRET.decode(),
        deployment=f"pc-{root.split('/')[0]}", batch_size=50,
    )
    try:
        proc.start()
        wait_for(lambda: proc.health().get("ready"), 60, "the sessions to exist on the broker")
        assert proc.stop() == 0
        publisher = Publisher(broker, messages, rate_per_s=20_000)  # the backlog, ingest down
        publisher.start()
        publisher.join()
        assert len(publisher.acked) == len(messages)
        with contextlib.ExitStack() as held:
            if lock_state:
                lock = held.enter_context(psycopg.connect(tasks_url, connect_timeout=5))
                lock.execute("LOCK TABLE alerts_engine_state IN ACCESS EXCLUSIVE MODE")
            proc.start()
            wait_for(lambda: proc.health().get("partitions"), 60, "the partitions to start")
            yield proc, len(messages), held.close  # closing the connection ends the lock
        assert proc.stop() == 0
    finally:
        proc.kill()


@pytest.mark.parametrize("alerts_late", [False, True], ids=["together", "alerts-start-late"])
def test_a_backlog_drain_parses_each_message_once_for_both_sessions(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str,
    tasks_url: str, receiver: Receiver, alerts_late: bool,
) -> None:
    """A partition's storage and alerts sessions stay in step, so the second takes the first's parse.

    Small batches make the verdict cache small (2 x 50 messages per partition) next to the
    backlog (1,200 or more messages per partition): the session ahead must wait for the other.
    ``alerts-start-late`` keeps the engine-state table locked for 2 s after the partitions
    start, so the alerts sessions load their state 2 s after the storage sessions could start
    draining: a session still starting must be waited for too.
    """
    with _backlog_drain(tmp_path, mosquitto, influxd, influx_db, topic_root, tasks_url, receiver,
                        lock_state=alerts_late) as (proc, readings, unlock):
        if alerts_late:
            time.sleep(2)  # the storage sessions could drain meanwhile
        unlock()
        wait_for(lambda: count_points(influxd, influx_db) == readings
                 and proc.metric("ingest_alerts_judged_total") >= readings, 120,
                 "the backlog stored and judged")
        parsed = proc.metric("ingest_messages_parsed_total")
        shared = proc.metric("ingest_parses_shared_total")
    # Each message parsed once and its parse taken by the other session (a few may be parsed
    # twice when a session waits longer than its bound, on a loaded machine).
    assert readings <= parsed <= 1.05 * readings, (parsed, shared)
    assert shared >= 0.95 * readings, (parsed, shared)


def test_a_hung_alerts_database_holds_storage_back_only_for_the_start_grace(
    tmp_path: Path, mosquitto: Broker, influxd: Influx, influx_db: str, topic_root: str,
    tasks_url: str, receiver: Receiver,
) -> None:
    """With the alerts' database hanging at start, storage waits at most 5 s, then drains alone.

    Every alerts session's first database call hangs on the lock. Those calls have threads of
    their own: on asyncio's shared default executor they held every thread, and the storage
    sessions' MQTT connects waited behind them.
    """
    with _backlog_drain(tmp_path, mosquitto, influxd, influx_db, topic_root, tasks_url, receiver,
                        lock_state=True) as (proc, readings, unlock):
        wait_for(lambda: count_points(influxd, influx_db) == readings, 60,
                 "the backlog stored while the alerts database hangs")
        assert proc.metric("ingest_alerts_judged_total") == 0  # still hanging: nothing judged yet
        unlock()
        wait_for(lambda: proc.metric("ingest_alerts_judged_total") >= readings, 120,
                 "every reading judged after")
