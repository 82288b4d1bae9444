"""Tasks: concurrent claims on SQLite and PostgreSQL, closing with evidence, the task API's
team isolation over real HTTP (uvicorn), and the CLI."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from alerts.api import build_app
from alerts.store import NewTask, Store
from tests.alerts.conftest import served
from weijian.cli import main
from weijian.config import AlertTeam

NOW = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)


def _task(alert_id: str, district: str) -> NewTask:
    return NewTask(alert_id=alert_id, district=district, site_id="yc-water-002", device_id="wq-01",
                   rule_id="dw-turbidity-high", severity="warning", title="巡查核查：浑浊度超过限值",
                   description="实测3NTU，限值1NTU（GB 5749-2022 表1 (B)）", due_at=NOW + timedelta(hours=24))


def _claim_race(store: Store, task_id: int) -> list[bool]:
    barrier = threading.Barrier(50)

    def claim(i: int) -> bool:
        barrier.wait()
        return store.claim(task_id, f"inspector-{i}", NOW)

    with ThreadPoolExecutor(50) as pool:
        return list(pool.map(claim, range(50)))


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_fifty_concurrent_claims_exactly_one_wins(db: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if db == "sqlite" else "postgres_url")
    store = Store(url, timeout_s=30)
    [task_id] = store.record([], [_task(f"race-{db}-{time.time_ns()}", "chengguan")], [], now=NOW)
    results = _claim_race(store, task_id)
    assert results.count(True) == 1
    task = store.task(task_id)
    assert task is not None and task["status"] == "claimed"
    winner = [f"inspector-{i}" for i, ok in enumerate(results) if ok]
    assert task["assignee"] == winner[0]
    assert [a["action"] for a in task["audit"]] == ["created", "claimed"]
    # closing needs a claim; it keeps finding, evidence and the trail
    assert store.close_task(task_id, winner[0], "现场核查：管网施工扰动，已冲洗", {"gps": [30.1, 117.2]}, NOW)
    assert not store.close_task(task_id, winner[0], "again", {}, NOW)
    closed = store.task(task_id)
    assert closed is not None and closed["status"] == "closed"
    assert closed["evidence"] == {"gps": [30.1, 117.2]}
    store.close()


@pytest.fixture
def api(sqlite_url: str) -> Iterator[tuple[str, Store, list[int]]]:
    store = Store(sqlite_url)
    ids = store.record([], [_task("a-cg", "chengguan"), _task("a-dj", "dongjiao")], [], now=NOW)
    teams = [AlertTeam(name="城关分局", token="tok-cg", districts=["chengguan"]),
             AlertTeam(name="东郊分局", token="tok-dj", districts=["dongjiao"])]
    try:
        with served(build_app(store, teams)) as base:
            yield base, store, ids
    finally:
        store.close()


def test_team_token_sees_and_touches_only_its_districts(api: tuple[str, Store, list[int]]) -> None:
    base, store, (cg, dj) = api
    cg_auth = {"Authorization": "Bearer tok-cg"}
    with httpx.Client(base_url=base, timeout=5) as c:
        assert c.get("/tasks").status_code == 401
        assert c.get("/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401
        listed = c.get("/tasks", headers=cg_auth).json()
        assert [t["id"] for t in listed] == [cg]
        assert c.get(f"/tasks/{dj}", headers=cg_auth).status_code == 404
        assert c.post(f"/tasks/{dj}/claim", json={"assignee": "王建国"}, headers=cg_auth).status_code == 404
        assert c.post(f"/tasks/{dj}/close", json={"finding": "x"}, headers=cg_auth).status_code == 404
        assert store.task(dj)["status"] == "open"  # type: ignore[index]
        ok = c.post(f"/tasks/{cg}/claim", json={"assignee": "王建国"}, headers=cg_auth)
        assert ok.status_code == 200 and ok.json()["assignee"] == "王建国"
        assert c.post(f"/tasks/{cg}/claim", json={"assignee": "刘芳"}, headers=cg_auth).status_code == 409
        body = {"finding": "已整改", "evidence": {"photos": ["oss://bucket/p1.jpg"], "gps": [30.0, 117.0]}}
        closed = c.post(f"/tasks/{cg}/close", json=body, headers=cg_auth).json()
        assert closed["status"] == "closed" and closed["evidence"]["photos"] == ["oss://bucket/p1.jpg"]
        assert "/tasks/{task_id}/claim" in c.get("/openapi.json").json()["paths"]


def test_cli_list_claim_close(sqlite_url: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(sqlite_url)
    [tid] = store.record([], [_task("cli-1", "xinhe")], [], now=NOW)
    cfg = tmp_path / "w.toml"
    cfg.write_text(f'[tasks]\nurl = "{sqlite_url}"\n', encoding="utf-8")
    assert main(["tasks", "list", "--config", str(cfg)]) == 0
    assert "巡查核查" in capsys.readouterr().out
    assert main(["tasks", "claim", str(tid), "--assignee", "赵丽", "--config", str(cfg)]) == 0
    assert main(["tasks", "claim", str(tid), "--assignee", "孙海涛", "--config", str(cfg)]) == 1
    assert main(["tasks", "close", str(tid), "--finding", "已核查", "--actor", "赵丽", "--gps", "30.1,117.2",
                 "--config", str(cfg)]) == 0
    assert main(["tasks", "show", str(tid), "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert '"status": "closed"' in out and "已核查" in out
    store.close()
