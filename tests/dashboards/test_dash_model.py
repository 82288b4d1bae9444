"""The built JSON validates against grafana-foundation-sdk's dashboard model (a lossless round
trip through its decoder), against the keys Grafana requires, and so do the provisioning files."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel
from pydantic import BaseModel, ConfigDict, Field

from dashboards.provisioning import DASHBOARDS_PATH
from dashboards.targets import INFLUX_UID, TASKS_UID, InfluxQLQuery, SqlQuery, register_variants
from weijian.cli import main


def _encode(obj: object) -> Any:
    return json.loads(json.dumps(obj, cls=JSONEncoder))


def _without_annotation_targets(board: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(board)
    for annotation in out["annotations"].get("list", []):
        annotation.pop("target", None)
    return out


def test_every_board_round_trips_through_the_sdk_decoder(boards: list[dict[str, Any]]) -> None:
    register_variants()
    for board in boards:
        decoded = Dashboard.from_json(copy.deepcopy(board))
        again = _encode(decoded)
        assert _without_annotation_targets(again) == _without_annotation_targets(board), board["uid"]
        for panel in decoded.panels or []:
            inner = panel.panels if isinstance(panel, RowPanel) else [panel]
            for p in inner:
                assert isinstance(p, Panel)
                for target in p.targets or []:
                    assert isinstance(target, InfluxQLQuery | SqlQuery), (board["uid"], p.title)


def test_the_round_trip_catches_a_key_the_model_does_not_know(boards: list[dict[str, Any]]) -> None:
    register_variants()
    board = copy.deepcopy(boards[0])
    board["panels"][0]["fieldConfig"]["defaults"]["thresholdz"] = {}
    assert _encode(Dashboard.from_json(copy.deepcopy(board))) != board


class _Ref(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["influxdb", "grafana-postgresql-datasource"]
    uid: Literal["weijian-influxdb", "weijian-tasks"]


class _Target(BaseModel):
    refId: str = Field(min_length=1)
    datasource: _Ref
    query: str | None = None
    rawSql: str | None = None
    rawQuery: Literal[True]


class _Grid(BaseModel):
    h: int = Field(ge=1)
    w: int = Field(ge=1, le=24)
    x: int = Field(ge=0, le=23)
    y: int = Field(ge=0)


class _Panel(BaseModel):
    type: str
    title: str = Field(min_length=1)
    gridPos: _Grid
    datasource: _Ref
    targets: list[_Target] = Field(min_length=1)


class _Row(BaseModel):
    type: Literal["row"]
    title: str
    gridPos: _Grid
    panels: list[_Panel]


class _AnnotationTarget(BaseModel):
    refId: str
    query: str = Field(min_length=1)
    rawQuery: Literal[True]
    textColumn: str
    tagsColumn: str


class _Annotation(BaseModel):
    name: str
    enable: bool
    iconColor: str
    datasource: _Ref
    target: _AnnotationTarget


class _Board(BaseModel):
    uid: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    title: str = Field(min_length=1)
    schemaVersion: int = Field(ge=36)
    time: dict[str, str]
    panels: list[_Panel | _Row] = Field(min_length=1)
    templating: dict[str, list[dict[str, Any]]]
    annotations: dict[str, list[_Annotation]]


def test_every_board_has_the_keys_grafana_requires(boards: list[dict[str, Any]]) -> None:
    uids = [_Board.model_validate(b).uid for b in boards]
    assert len(set(uids)) == len(uids) == 8
    for board in boards:
        for panel in board["panels"]:
            for inner in [panel, *panel.get("panels", [])]:
                for target in inner.get("targets", []):
                    is_influx = target["datasource"]["uid"] == INFLUX_UID
                    assert target["query"] if is_influx else target["rawSql"]
        titles = [p["title"] for p in board["panels"]]
        assert all(any("\u4e00" <= ch <= "\u9fff" for ch in t) or t.startswith("pH") for t in titles)


def test_build_writes_provisioning_grafana_reads(tmp_path: Path) -> None:
    assert main(["dashboards", "build", "--out", str(tmp_path)]) == 0
    sources = yaml.safe_load((tmp_path / "provisioning/datasources/weijian.yaml").read_text())
    assert sources["apiVersion"] == 1
    by_uid = {s["uid"]: s for s in sources["datasources"]}
    assert set(by_uid) == {INFLUX_UID, TASKS_UID}
    for source in by_uid.values():
        assert {"name", "type", "access", "url", "orgId"} <= set(source)
    assert by_uid[INFLUX_UID]["jsonData"]["version"] == "InfluxQL"
    assert by_uid[INFLUX_UID]["jsonData"]["dbName"] == "weijian"
    assert by_uid[TASKS_UID]["jsonData"]["database"]
    providers = yaml.safe_load((tmp_path / "provisioning/dashboards/weijian.yaml").read_text())
    (provider,) = providers["providers"]
    assert providers["apiVersion"] == 1
    assert provider["type"] == "file" and provider["options"]["path"] == DASHBOARDS_PATH
    assert {"name", "orgId", "folder", "folderUid"} <= set(provider)
    files = sorted(p.name for p in (tmp_path / "dashboards").glob("*.json"))
    assert len(files) == 8
    for file in files:
        board = json.loads((tmp_path / "dashboards" / file).read_text())
        assert file == f"{board['uid']}.json"
        assert "id" not in board  # a provisioned dashboard is found by uid


def test_passwords_stay_out_of_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIJIAN_INFLUX__PASSWORD", "s3cret-influx")
    monkeypatch.setenv("WEIJIAN_GRAFANA__TASKS_URL", "postgresql://grafana:s3cret-pg@db:5433/weijian")
    assert main(["dashboards", "build", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "provisioning/datasources/weijian.yaml").read_text()
    assert "s3cret" not in text
    sources = {s["uid"]: s for s in yaml.safe_load(text)["datasources"]}
    assert sources[INFLUX_UID]["secureJsonData"]["password"] == "$__env{WEIJIAN_INFLUX__PASSWORD}"
    assert sources[TASKS_UID]["url"] == "db:5433" and sources[TASKS_UID]["user"] == "grafana"


def test_a_bad_tasks_url_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIJIAN_GRAFANA__TASKS_URL", "postgresql://")
    assert main(["dashboards", "build", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "dashboards").exists()


def test_the_public_api_is_what_all_says() -> None:
    import dashboards

    for name in dashboards.__all__:
        assert getattr(dashboards, name) is not None
    with pytest.raises(AttributeError):
        _ = dashboards.nothing_here
