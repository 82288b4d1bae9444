"""Every SQL panel against the alerts stage's real task table on PostgreSQL.

The tables are created by the alerts stage's own code (``alerts.store.Store``), then read
back by reflection, so a renamed table or column in alerts breaks this test, not the desk.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from dashboards import tasks_sql
from dashboards.boards import panel_targets
from dashboards.templating import TimeRange, substitute

NOW = datetime(2026, 7, 15, 10, 30, tzinfo=UTC)


@pytest.fixture
def tasks_url(postgres_url: str) -> Iterator[str]:
    """A schema of this test's own (other stages' tests share the session schema)."""
    base = postgres_url.split("?", 1)[0]
    schema = f"dash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{base}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _fill(url: str) -> sa.Engine:
    from alerts.store import Store, TaskStatus, engine_url  # the alerts stage creates its tables

    store = Store(url)
    store.engine.dispose()
    engine = sa.create_engine(engine_url(url))
    table = sa.Table(tasks_sql.TASKS_TABLE, sa.MetaData(), autoload_with=engine)
    rows = []
    for i, (status, age_h, due_in_h) in enumerate([
        (TaskStatus.OPEN, 1, 3), (TaskStatus.OPEN, 30, -6), (TaskStatus.CLAIMED, 5, -1),
        (TaskStatus.RESOLVED, 8, 16), (TaskStatus.CLOSED, 20, -10),
    ]):
        created = NOW - timedelta(hours=age_h)
        rows.append({
            "alert_id": f"a-{i}", "district": "chengguan", "site_id": "yc-pool-001", "device_id": "pc-01",
            "rule_id": "sp-free-chlorine-low", "severity": "critical", "title": "游泳池水游离性余氯低于限值",
            "description": "现场核查", "status": status.value, "created_at": created,
            "due_at": NOW + timedelta(hours=due_in_h),
        })
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    return engine


def _sql_panels(boards: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for board in boards:
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == "grafana-postgresql-datasource":
                    out.append((board["uid"], panel, target))
    return out


def test_every_sql_panel_runs_on_the_alerts_task_table(
    tasks_url: str, boards: list[dict[str, Any]]
) -> None:
    engine = _fill(tasks_url)
    day = TimeRange(NOW - timedelta(hours=24), NOW)
    panels = _sql_panels(boards)
    assert len(panels) == 5
    results = {}
    try:
        with engine.connect() as conn:
            for uid, panel, target in panels:
                result = conn.execute(sa.text(substitute(target["rawSql"], day, dialect="sql")))
                columns, rows = set(result.keys()), result.fetchall()
                assert rows, f"{uid} {panel['title']}: no rows"
                shown = set()
                for t in panel.get("transformations", []):
                    if t["id"] == "organize":
                        shown |= set(t["options"]["renameByName"])
                assert shown <= columns, f"{panel['title']}: shows {shown - columns}"
                results[(uid, panel["title"])] = rows
    finally:
        engine.dispose()
    by_status: dict[str, int] = dict(results[("weijian-tasks", "任务状态")])
    assert by_status == {"open": 2, "claimed": 1, "resolved": 1, "closed": 1}
    assert results[("weijian-overview", "超期任务")] == [(2,)]  # open 30 h ago and the claimed one
    assert len(results[("weijian-tasks", "任务列表")]) == 4  # the fifth was created 30 h ago


def test_the_closed_status_is_one_the_alerts_stage_uses() -> None:
    from alerts.store import TaskStatus

    assert tasks_sql.CLOSED_STATUS in {s.value for s in TaskStatus}


def test_panel_targets_lists_rows_too(boards: list[dict[str, Any]]) -> None:
    site = next(b for b in boards if b["uid"] == "weijian-site")
    assert len(panel_targets(site)) == sum(len(p["panels"]) for p in site["panels"])
