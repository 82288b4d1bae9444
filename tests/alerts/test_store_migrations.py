"""Schema migrations of the alerts database on real PostgreSQL and SQLite: concurrent starts on
an empty database, the migration lock, a database made by the pre-migration code (no
alembic_version) upgraded by ``weijian tasks migrate`` with its rows kept, and the head
revision matching the tables the store queries."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from alerts.store import MIGRATION_LOCK_KEY, Store, _alembic_config, engine_url, metadata, migrate
from tests.alerts.conftest import free_port
from tests.conftest import POSTGRES_DSN, ROOT

HEAD = "0005"
WEIJIAN = Path(sys.executable).with_name("weijian")

# A child process: import everything, say it is ready, wait for "go", then open a Store.
_START_STORE = """
import sys, time
from pathlib import Path
from alerts.store import Store
url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.001)
Store(url).close()
print("opened")
"""


@pytest.fixture
def empty_url(url: str) -> str:
    return url  # a database of this test's own, not yet migrated


def _versions(url: str) -> list[str]:
    engine = create_engine(engine_url(url))
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


def _start_together(url: str, workdir: Path, n: int) -> list[tuple[int, str, str]]:
    go = workdir / "go"
    procs = []
    for i in range(n):
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _START_STORE, url, str(workdir / f"ready-{i}"), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        ))
    deadline = time.monotonic() + 60
    while not all((workdir / f"ready-{i}").exists() for i in range(n)):
        assert time.monotonic() < deadline, "the child processes did not start"
        time.sleep(0.01)
    go.touch()  # all of them are past their imports: they open the store at the same moment
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        out.append((proc.returncode, stdout, stderr))
    return out


def test_processes_starting_at_once_on_an_empty_database_all_succeed(empty_url: str, tmp_path: Path) -> None:
    results = _start_together(empty_url, tmp_path, n=4)
    assert [(code, out.strip()) for code, out, _ in results] == [(0, "opened")] * 4, [r[2] for r in results]
    assert _versions(empty_url) == [HEAD]
    assert migrate(empty_url) == (HEAD, HEAD)


def test_the_head_schema_is_what_the_store_queries(empty_url: str) -> None:
    store = Store(empty_url)
    try:
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        store.close()


def test_a_store_waits_for_a_migration_in_progress_on_postgresql(fresh_pg_url: str) -> None:
    opened = threading.Event()
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            Store(fresh_pg_url).close()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        opened.set()

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))  # "another process migrating"
        thread = threading.Thread(target=open_store)
        thread.start()
        assert not opened.wait(1.5), "the store migrated without the migration lock"
    # the holder's session ended, so the lock is released
    assert opened.wait(30) and not errors, errors
    thread.join()
    assert _versions(fresh_pg_url) == [HEAD]


def test_a_store_waits_for_a_migration_in_progress_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.sqlite'}"
    opened = threading.Event()

    def open_store() -> None:
        Store(url).close()
        opened.set()

    thread = threading.Thread(target=open_store)
    with (tmp_path / "tasks.sqlite.migrate.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        thread.start()
        assert not opened.wait(1.5), "the store migrated without the migration lock"
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert opened.wait(30)
    thread.join()
    assert _versions(url) == [HEAD]


def _make_unversioned(url: str) -> None:
    """The state the pre-migration code leaves: today's five tables with rows, no alembic_version."""
    engine = create_engine(engine_url(url))
    try:
        with engine.connect() as conn:
            command.upgrade(_alembic_config(conn), "0001")
            conn.commit()
            t = "2026-11-24 09:00:00+00:00"
            conn.execute(text(
                "INSERT INTO alerts_alerts (alert_id, site_id, device_id, rule_id, kind, district, severity,"
                " state, since, level, late, silenced, inhibited) VALUES ('a-1', 'yc-dw-001', 'tu-01',"
                " 'gb5749.turbidity', 'drinking_water', 'chengguan', 'warning', 'firing', :t, 1, false,"
                " false, false)"), {"t": t})
            task_id = conn.execute(text(
                "INSERT INTO alerts_tasks (alert_id, district, site_id, device_id, rule_id, severity, title,"
                " description, status, created_at, due_at) VALUES ('a-1', 'chengguan', 'yc-dw-001', 'tu-01',"
                " 'gb5749.turbidity', 'warning', '浊度超标', 'desc', 'open', :t, :t) RETURNING id"),
                {"t": t}).scalar_one()
            conn.execute(text(
                "INSERT INTO alerts_task_audit (task_id, at, actor, action, detail)"
                " VALUES (:id, :t, 'system', 'created', '浊度超标')"), {"id": task_id, "t": t})
            conn.execute(text(
                "INSERT INTO alerts_outbox (idem_key, channel, recipient, alert_id, payload, created_at,"
                " next_attempt_at, attempts, status) VALUES ('a-1:firing:1:0:sms:13800000001', 'sms',"
                " '13800000001', 'a-1', '{\"text\": \"x\"}', :t, :t, 0, 'pending')"), {"t": t})
            conn.execute(text("DROP TABLE alembic_version"))
            conn.commit()
    finally:
        engine.dispose()


def _migrate_cli(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WEIJIAN), "tasks", "migrate", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_tasks_migrate_upgrades_an_unversioned_database_keeping_its_rows(
    empty_url: str, tmp_path: Path
) -> None:
    _make_unversioned(empty_url)
    config = tmp_path / "weijian.toml"
    config.write_text(f'[tasks]\nurl = "{empty_url}"\n', encoding="utf-8")

    first = _migrate_cli(config)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("alerts database ")
    assert first.stdout.strip().endswith(f": 0001 -> {HEAD}")
    assert _versions(empty_url) == [HEAD]

    store = Store(empty_url)
    try:
        [alert] = store.alerts()
        assert (alert.alert_id, alert.rule_id, alert.level) == ("a-1", "gb5749.turbidity", 1)
        [task] = store.tasks()
        assert store.task(task["id"])["audit"][0]["detail"] == "浊度超标"  # type: ignore[index]
        [row] = store.deliveries()
        assert (row["idem_key"], row["status"], row["claimed_by"]) == (
            "a-1:firing:1:0:sms:13800000001", "pending", None)
        assert store.pending_count() == 1
        with store.engine.connect() as conn:
            assert "alerts_engine_state" in inspect(conn).get_table_names()
    finally:
        store.close()

    second = _migrate_cli(config)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().endswith(f": already at {HEAD}")


def test_tasks_migrate_hides_the_password_and_exits_1_when_the_database_is_unreachable(
    tmp_path: Path
) -> None:
    config = tmp_path / "weijian.toml"
    config.write_text(f'[tasks]\nurl = "postgresql://weijian:s3cret@127.0.0.1:{free_port()}/tasks"\n',
                      encoding="utf-8")
    done = _migrate_cli(config)
    assert done.returncode == 1
    assert "alerts database not migrated: postgresql://weijian@127.0.0.1:" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
