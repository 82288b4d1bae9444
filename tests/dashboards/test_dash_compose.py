"""deploy/compose.yaml: Docker cannot run here, so its structure is checked against the files
`dashboards build` produces and the repository's own paths."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from dashboards.provisioning import DASHBOARDS_PATH
from weijian.cli import main
from weijian.config import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return data


def test_compose_has_the_stack() -> None:
    services = _compose()["services"]
    assert set(services) >= {"mosquitto", "influxdb", "grafana", "ingest"}
    assert services["influxdb"]["image"].startswith("influxdb:1.")
    assert services["grafana"]["image"].startswith("grafana/grafana:11.")
    assert services["ingest"]["command"][:2] == ["ingest", "run"]
    build = services["ingest"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert "pip install" in (DEPLOY / "Dockerfile").read_text()


def test_every_bind_mount_points_at_a_file_we_ship_or_build(tmp_path: Path) -> None:
    stage = tmp_path / "deploy"
    shutil.copytree(DEPLOY, stage)
    (tmp_path / "examples").mkdir()
    shutil.copy(DEPLOY.parent / "examples" / "registry.toml", tmp_path / "examples" / "registry.toml")
    config, out = str(stage / "weijian.toml"), str(stage / "grafana")
    assert main(["dashboards", "build", "--config", config, "--out", out]) == 0
    named = set(_compose().get("volumes", {}))
    targets: dict[str, str] = {}
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source in named:
                continue
            assert (stage / source).exists(), f"{name}: {source} does not exist"
            targets[target] = source
    assert (stage / targets["/etc/grafana/provisioning/datasources"] / "weijian.yaml").is_file()
    assert (stage / targets["/etc/grafana/provisioning/dashboards"] / "weijian.yaml").is_file()
    assert len(list((stage / targets[DASHBOARDS_PATH]).glob("*.json"))) == 8
    sources = yaml.safe_load((stage / "grafana/provisioning/datasources/weijian.yaml").read_text())
    urls = {s["type"]: s["url"] for s in sources["datasources"]}
    assert urls == {"influxdb": "http://influxdb:8086", "grafana-postgresql-datasource": "postgres:5432"}


def test_the_container_config_loads() -> None:
    settings = load_settings(DEPLOY / "weijian.toml")
    services = set(_compose()["services"])
    assert settings.mqtt.host in services and settings.influx.url == "http://influxdb:8086"
