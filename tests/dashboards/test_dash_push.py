"""``dashboards push`` against a local stand-in for Grafana's HTTP API (Grafana cannot run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from grafana_standin import grafana_standin

from dashboards.push import PushFailed, push
from weijian.cli import main
from weijian.config import Settings
from weijian.demo.local_services import free_port

TOKEN = "glsa_test_token"


def _settings(url: str, token: str = TOKEN) -> Settings:
    return Settings.model_validate({"grafana": {"url": url, "token": token, "timeout_s": 5}})


def test_push_creates_then_updates_by_uid(boards: list[dict[str, Any]]) -> None:
    with grafana_standin(TOKEN) as (url, state):
        first = push(_settings(url), boards)
        assert sorted(first.created) == ["datasource:weijian-influxdb", "datasource:weijian-tasks",
                                         "folder:weijian"]
        assert ("GET", "/api/folders/weijian", 404) in state.requests
        assert ("POST", "/api/folders", 200) in state.requests
        assert ("GET", "/api/datasources/uid/weijian-influxdb", 404) in state.requests
        assert state.requests.count(("POST", "/api/dashboards/db", 200)) == 8
        uids = set(state.dashboards)

        state.requests.clear()
        second = push(_settings(url), boards)
        assert second.created == []
        assert ("GET", "/api/folders/weijian", 200) in state.requests
        assert ("PUT", "/api/folders/weijian", 200) in state.requests
        assert ("PUT", "/api/datasources/uid/weijian-tasks", 200) in state.requests
        assert not [r for r in state.requests if r[0] == "POST" and r[1] != "/api/dashboards/db"]
        assert all(status == 200 for _, _, status in state.requests)
        assert set(state.dashboards) == uids and len(uids) == 8
        assert {d["version"] for d in state.dashboards.values()} == {2}
        assert {d["folderUid"] for d in state.dashboards.values()} == {"weijian"}
        assert set(state.datasources) == {"weijian-influxdb", "weijian-tasks"}
        assert state.datasources["weijian-influxdb"]["jsonData"]["version"] == "InfluxQL"
        assert state.problems == []


def test_a_wrong_token_fails_with_the_object_named(boards: list[dict[str, Any]]) -> None:
    with grafana_standin(TOKEN) as (url, state):
        with pytest.raises(PushFailed, match="folder:weijian"):
            push(_settings(url, token="wrong"), boards)
        assert state.folders == {} and state.requests == [("GET", "/api/folders/weijian", 401)]


def test_an_unreachable_grafana_is_a_push_failure(boards: list[dict[str, Any]]) -> None:
    with pytest.raises(PushFailed):
        push(_settings(f"http://127.0.0.1:{free_port()}"), boards[:1])


def test_the_cli_pushes_with_url_and_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with grafana_standin(TOKEN) as (url, state):
        assert main(["dashboards", "push", "--url", url, "--token", TOKEN]) == 0
        assert "created 3, updated 8" in capsys.readouterr().out
        assert main(["dashboards", "push", "--url", url, "--token", "nope"]) == 1
        assert len(state.dashboards) == 8
