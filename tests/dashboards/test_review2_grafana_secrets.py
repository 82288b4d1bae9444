"""Data-source passwords: environment references in the provisioning files, real values on push.

Grafana expands ``$__env{NAME}`` only when it reads a provisioning file; its HTTP API stores what
it is sent. So the files name variables (which must not collide with weijian's own
``WEIJIAN_<SECTION>__<KEY>`` settings, where an unknown key is an error), and ``push`` sends the
passwords themselves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from grafana_standin import grafana_standin

from weijian.cli import main

TOKEN = "glsa_review2"
REPO = Path(__file__).resolve().parents[2]
EXAMPLE_REGISTRY = REPO / "examples" / "registry.toml"


def test_every_env_name_in_the_provisioning_files_can_be_set_beside_weijian(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One environment serves the deployment: setting what the files reference breaks no program."""
    monkeypatch.setenv("WEIJIAN_INFLUX__USERNAME", "grafana")
    monkeypatch.setenv("WEIJIAN_INFLUX__PASSWORD", "s3cret-influx")
    monkeypatch.setenv("WEIJIAN_GRAFANA__TASKS_URL", "postgresql://grafana:s3cret-pg@db:5433/weijian")
    monkeypatch.setenv("WEIJIAN_REGISTRY__PATH", str(EXAMPLE_REGISTRY))
    assert main(["dashboards", "build", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "provisioning/datasources/weijian.yaml").read_text(encoding="utf-8")
    names = re.findall(r"\$__env\{([A-Za-z0-9_]+)\}", text)
    assert len(names) == 2 and "s3cret" not in text
    docs = (REPO / "docs" / "dashboards.md").read_text(encoding="utf-8")
    for name in names:
        assert name in docs, f"{name} is not documented"
        monkeypatch.setenv(name, "the value Grafana's container gets")
    capsys.readouterr()
    # Every weijian program loads the same settings: with those variables set, they still load.
    assert main(["config", "show"]) == 0, capsys.readouterr().err
    assert main(["dashboards", "build", "--out", str(tmp_path / "again")]) == 0


def test_push_sends_the_configured_passwords_not_env_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "weijian.toml"
    config.write_text(
        f'[registry]\npath = "{EXAMPLE_REGISTRY}"\n'
        '[influx]\nusername = "grafana"\n'
        '[grafana]\ntasks_url = "postgresql://grafana:pg%2Fpass%40word@db:5433/weijian"\n',
        encoding="utf-8")
    monkeypatch.setenv("WEIJIAN_INFLUX__PASSWORD", "influx-pass")  # from the environment
    with grafana_standin(TOKEN) as (url, state):
        args = ["dashboards", "push", "--config", str(config), "--url", url, "--token", TOKEN]
        assert main(args) == 0
        assert main(args) == 0  # created, then updated in place: both carry the password
        assert ("PUT", "/api/datasources/uid/weijian-tasks", 200) in state.requests
        sources: dict[str, Any] = state.datasources
        assert "$__env" not in json.dumps(sources)
        assert sources["weijian-influxdb"]["user"] == "grafana"
        assert sources["weijian-influxdb"]["secureJsonData"] == {"password": "influx-pass"}
        assert sources["weijian-tasks"]["user"] == "grafana"
        assert sources["weijian-tasks"]["secureJsonData"] == {"password": "pg/pass@word"}
        assert state.problems == []


def test_push_without_passwords_sends_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WEIJIAN_INFLUX__PASSWORD", raising=False)
    config = tmp_path / "weijian.toml"
    config.write_text(f'[registry]\npath = "{EXAMPLE_REGISTRY}"\n'
                      '[grafana]\ntasks_url = "postgresql://weijian@db:5432/weijian"\n', encoding="utf-8")
    with grafana_standin(TOKEN) as (url, state):
        assert main(["dashboards", "push", "--config", str(config), "--url", url, "--token", TOKEN]) == 0
        assert all("secureJsonData" not in s for s in state.datasources.values())
        assert "$__env" not in json.dumps(state.datasources)


def test_a_bad_tasks_url_is_named_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "weijian.toml"
    conf.write_text('[grafana]\ntasks_url = "postgresql://grafana:s3cret-pw@/"\n')
    assert main(["dashboards", "build", "--config", str(conf), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "grafana.tasks_url" in err and "s3cret-pw" not in err
