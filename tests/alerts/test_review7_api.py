"""Review 7, the task API over real HTTP (uvicorn) and a real SQLite tasks database: token
lifetimes exactly as configured, no control characters of any kind (C1 included), supervisors
refused (403) before a task's state is looked at, and the chart's readings with every documented
key (docs/alerts.md, "HTTP API")."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from alerts.accounts import Accounts, Role
from alerts.api import ApiOptions, build_app
from alerts.store import NewTask, Store
from tests.alerts.conftest import firing_turbidity_alert, served, turbidity_task
from tests.alerts.test_accounts_api import png
from weijian.config import AlertTeam

NOW = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
PASSWORD = "correct-horse-7"
TEAM = {"Authorization": "Bearer tok-cg"}
# Category Cc beyond ASCII: NEL, CSI and the first and last of the C1 block.
C1 = ["\x85", "\x9b", "\x80", "\x9f"]


def _task(alert_id: str) -> NewTask:
    return turbidity_task(alert_id, "chengguan", NOW)


@dataclass
class Api:
    base: str
    store: Store
    ids: list[int]

    def login(self, c: httpx.Client, username: str) -> dict[str, Any]:
        r = c.post("/auth/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return dict(r.json())


def _auth(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    store = Store(sqlite_url)
    ids = store.record([], [_task("r7-a"), _task("r7-b"), _task("r7-c")], [], now=NOW)
    # The real clock, as `weijian tasks serve` runs it, and the default lifetimes.
    accounts = Accounts(store.engine)
    for username, role in [("wang", Role.INSPECTOR), ("liu", Role.INSPECTOR), ("boss", Role.SUPERVISOR),
                           ("desk", Role.DUTY_DESK)]:
        accounts.add(username, name=username, phone="", team="城关分局", districts=["chengguan"], role=role,
                     password=PASSWORD)
    app = build_app(store, [AlertTeam(name="城关分局", token="tok-cg", districts=["chengguan"])],
                    options=ApiOptions(accounts=accounts))
    try:
        with served(app) as base:
            yield Api(base, store, ids)
    finally:
        store.close()


def test_login_and_refresh_give_the_configured_lifetimes_exactly(api: Api) -> None:
    with httpx.Client(base_url=api.base, timeout=10) as c:
        tokens = api.login(c, "wang")
        assert (tokens["expires_in"], tokens["refresh_expires_in"]) == (900, 43_200)
        again = c.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert again.status_code == 200, again.text
        assert (again.json()["expires_in"], again.json()["refresh_expires_in"]) == (900, 43_200)


@pytest.mark.parametrize("char", C1)
def test_c1_control_characters_are_refused_with_422_and_change_nothing(api: Api, char: str) -> None:
    first, second, _ = api.ids
    with httpx.Client(base_url=api.base, timeout=10) as c:
        # The assignee a team token names.
        r = c.post(f"/tasks/{first}/claim", json={"assignee": f"王{char}建国"}, headers=TEAM)
        assert r.status_code == 422, r.text
        # X-Inspector, as a client sends it (UTF-8).
        r = c.post(f"/tasks/{first}/claim", json={"assignee": "王建国"},
                   headers=[(b"Authorization", b"Bearer tok-cg"), (b"X-Inspector", f"王{char}".encode())])
        assert r.status_code == 422, r.text
        task = api.store.task(first)
        assert task is not None and task["status"] == "open"
        # The finding (newlines and tabs are allowed there; C1 is not) and photo references.
        wang = api.login(c, "wang")
        assert c.post(f"/tasks/{second}/claim", headers=_auth(wang)).status_code == 200
        for body in ({"finding": f"已整改{char}"},
                     {"finding": "已整改", "evidence": {"photos": [f"oss://bucket/p{char}1.jpg"]}}):
            r = c.post(f"/tasks/{second}/close", json=body, headers=_auth(wang))
            assert r.status_code == 422, (body, r.text)
        task = api.store.task(second)
        assert task is not None and task["status"] == "claimed"
        # Still fine: newlines and tabs in the finding, Chinese in X-Inspector.
        ok = c.post(f"/tasks/{second}/close", json={"finding": "已整改\n\t复查合格"}, headers=_auth(wang))
        assert ok.status_code == 200, ok.text


def test_the_openapi_document_refuses_c1_too(api: Api) -> None:
    import re

    doc = httpx.get(f"{api.base}/openapi.json", timeout=10).json()
    schemas = doc["components"]["schemas"]
    finding = schemas["CloseRequest"]["properties"]["finding"]
    assignee = next(s for s in schemas["ReassignRequest"]["properties"]["assignee"].get("anyOf", [
        schemas["ReassignRequest"]["properties"]["assignee"]]) if "pattern" in s)
    header = next(p for p in doc["paths"]["/tasks/{task_id}/claim"]["post"]["parameters"]
                  if p["name"].lower() == "x-inspector")
    header_schema = next(s for s in [header["schema"], *header["schema"].get("anyOf", [])] if "pattern" in s)
    for pattern in (finding["pattern"], assignee["pattern"], header_schema["pattern"]):
        for char in C1:
            assert re.search(pattern, f"a{char}b") is None, (pattern, char)
        assert re.search(pattern, "王建国") is not None
    assert re.search(finding["pattern"], "a\nb\tc") is not None


def test_a_supervisor_is_refused_403_whatever_the_tasks_state(api: Api) -> None:
    opened, claimed, _ = api.ids
    with httpx.Client(base_url=api.base, timeout=10) as c:
        boss, liu, wang = api.login(c, "boss"), api.login(c, "liu"), api.login(c, "wang")
        assert c.post(f"/tasks/{claimed}/claim", headers=_auth(wang)).status_code == 200
        body = {"finding": "已整改"}
        photo = {"photo": ("p.png", png(), "image/png")}
        for tid in (opened, claimed):
            assert c.post(f"/tasks/{tid}/close", json=body, headers=_auth(boss)).status_code == 403, tid
            assert c.post(f"/tasks/{tid}/photos", files=photo, headers=_auth(boss)).status_code == 403, tid
        # An inspector keeps the documented order: an open task is 409 before another's is 403.
        assert c.post(f"/tasks/{opened}/close", json=body, headers=_auth(liu)).status_code == 409
        assert c.post(f"/tasks/{claimed}/close", json=body, headers=_auth(liu)).status_code == 403
        assert [api.store.task(t)["status"] for t in (opened, claimed)] == ["open", "claimed"]  # type: ignore[index]


def test_readings_always_answer_every_documented_key(api: Api, sqlite_url: str) -> None:
    keys = {"metric", "unit", "title", "threshold", "since", "points"}
    with httpx.Client(base_url=api.base, timeout=10) as c:
        r = c.get(f"/tasks/{api.ids[0]}/readings", headers=TEAM)  # no alert recorded, no InfluxDB
        assert r.status_code == 200, r.text
        assert set(r.json()) == keys and r.json()["points"] == []


def test_readings_without_influxdb_still_name_the_alerts_rule_limit_and_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from weijian.contract import Kind
    from weijian.rules import default_rule_packs

    store = Store(f"sqlite:///{tmp_path / 'tasks.sqlite'}")
    alert = firing_turbidity_alert("r7-a", NOW)
    fired = alert.since
    [tid] = store.record([alert], [_task("r7-a")], [], now=NOW)
    packs = dict(default_rule_packs())
    title = next(r.title for r in packs[Kind.DRINKING_WATER].rules if r.id == "dw-turbidity-high")
    app = build_app(store, [AlertTeam(name="城关分局", token="tok-cg", districts=["chengguan"])],
                    options=ApiOptions(rule_packs=packs))  # no [influx]: nothing to chart
    try:
        with served(app) as base:
            r = httpx.get(f"{base}/tasks/{tid}/readings", headers=TEAM, timeout=10)
    finally:
        store.close()
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"metric", "unit", "title", "threshold", "since", "points"}
    assert body["title"] == title and body["threshold"] == 1.0 and body["points"] == []
    assert datetime.fromisoformat(body["since"]) == fired
