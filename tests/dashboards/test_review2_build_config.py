"""``dashboards build`` reads the rule packs and the registry the configuration names.

The bands must be the ones the alert engine inside ingest judges with (``[alerts] rules_dir``),
and a registry that is not there must be said, naming ``[registry] path`` and the file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from alerts.service import load_packs
from weijian.cli import main
from weijian.config import load_settings
from weijian.contract import Kind
from weijian.rules import DEFAULT_RULES_DIR, RuleType

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_REGISTRY = REPO / "examples" / "registry.toml"


def _board(out: Path, uid: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "dashboards" / f"{uid}.json").read_text(encoding="utf-8"))
    return data


def _drawn(board: dict[str, Any], title: str) -> set[float]:
    panel = next(p for p in board["panels"] if p["title"] == title)
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return {s["value"] for s in steps if s["value"] is not None}


def test_build_draws_the_limits_of_the_configured_rules_dir(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES_DIR, rules)
    pack = rules / "swimming_pool.toml"
    text = pack.read_text(encoding="utf-8")
    assert "max = 7.8" in text
    pack.write_text(text.replace("max = 7.8", "max = 7.9"), encoding="utf-8")
    config = tmp_path / "weijian.toml"
    config.write_text(f'[alerts]\nrules_dir = "rules"\n[registry]\npath = "{EXAMPLE_REGISTRY}"\n',
                      encoding="utf-8")
    out = tmp_path / "out"
    assert main(["dashboards", "build", "--config", str(config), "--out", str(out)]) == 0
    # The engine's own loader (ingest's alert stage) on the same configuration:
    engine_packs = load_packs(load_settings(config))
    ph = {v for r in engine_packs[Kind.SWIMMING_POOL].rules if r.type is RuleType.RANGE and r.metric == "ph"
          for v in (r.min, r.max) if v is not None}
    assert 7.9 in ph
    assert _drawn(_board(out, "weijian-swimming-pool"), "pH") == ph


def test_a_configured_registry_that_is_missing_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "weijian.toml"
    config.write_text('[registry]\npath = "no-such-registry.toml"\n', encoding="utf-8")
    out = tmp_path / "out"
    assert main(["dashboards", "build", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "[registry] path" in err and str(tmp_path / "no-such-registry.toml") in err
    assert not out.exists()


def test_an_unconfigured_registry_missing_at_the_default_path_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no registry.toml here, and no --config
    monkeypatch.delenv("WEIJIAN_REGISTRY__PATH", raising=False)
    assert main(["dashboards", "build", "--out", str(tmp_path / "out")]) == 0
    warnings = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    (warning,) = [w for w in warnings if w["level"] == "WARNING" and "registry" in w["event"]]
    assert warning["key"] == "[registry] path"
    assert Path(warning["path"]) == (tmp_path / "registry.toml").resolve()
    assert len(list((tmp_path / "out" / "dashboards").glob("*.json"))) == 8


def test_the_deploy_config_finds_its_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented compose command restricts limit panels to the sites they apply to."""
    out = tmp_path / "grafana"
    assert main(["dashboards", "build", "--config", str(REPO / "deploy" / "weijian.toml"),
                 "--out", str(out)]) == 0
    assert "registry" not in capsys.readouterr().err
    board = _board(out, "weijian-drinking-water")
    panel = next(p for p in board["panels"] if p["title"] == "游离氯（出厂水）")
    assert '"site_id" =~ /^(' in panel["targets"][0]["query"]
