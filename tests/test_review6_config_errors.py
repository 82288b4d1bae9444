"""Configuration errors found after loading still name the file and the dotted key (exit 2).

``[influx] api = "v2"`` without org, bucket or token and ``[ingest] coordination = "postgres"``
with a SQLite tasks URL are refused by ``weijian ingest run``; a route's ``district`` and
``kind`` are checked like every other identifier and kind, at load time, by every program.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _weijian(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEIJIAN_")}
    return subprocess.run([sys.executable, "-m", "weijian.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, env=env, check=False)


def _ingest_conf(tmp_path: Path, example_registry: Path, extra: str) -> Path:
    conf = tmp_path / "ingest.toml"
    conf.write_text(
        f'[registry]\npath = "{example_registry}"\n'
        "[mqtt]\nport = 1\ntimeout_s = 1\n"  # nothing listens: the check must come first anyway
        f'[ingest]\nalerts = false\nmetrics_port = false\nlock_path = "{tmp_path / "ingest.lock"}"\n'
        f'spool_path = "{tmp_path / "s.sqlite"}"\nquarantine_path = "{tmp_path / "q.sqlite"}"\n'
        f'dedup_path = "{tmp_path / "d.sqlite"}"\n' + extra
    )
    return conf


@pytest.mark.parametrize(
    ("influx", "missing"),
    [
        ('api = "v2"\n', ["influx.org", "influx.bucket", "influx.token"]),
        ('api = "v2"\norg = "yc"\ntoken = "t0ken"\n', ["influx.bucket"]),
        ('api = "v2"\norg = "yc"\nbucket = "weijian"\n', ["influx.token"]),
    ],
)
def test_influx_v2_without_org_bucket_or_token_names_the_file_and_each_key(
    tmp_path: Path, example_registry: Path, influx: str, missing: list[str]
) -> None:
    conf = _ingest_conf(tmp_path, example_registry, "[influx]\n" + influx)
    done = _weijian("ingest", "run", "--config", str(conf))
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("weijian: error:") or
              line.startswith(str(conf))]
    assert errors, done.stderr
    for key in missing:
        assert f"{conf}: key '{key}': " in done.stderr, done.stderr
        assert "api = 'v2'" in done.stderr
    for key in {"influx.org", "influx.bucket", "influx.token"} - set(missing):
        assert f"'{key}'" not in done.stderr


def test_postgres_coordination_with_a_sqlite_tasks_url_names_the_file_and_key(
    tmp_path: Path, example_registry: Path
) -> None:
    conf = _ingest_conf(tmp_path, example_registry, 'coordination = "postgres"\n'
                        f'[tasks]\nurl = "sqlite:///{tmp_path}/t.sqlite"\n')
    done = _weijian("ingest", "run", "--config", str(conf))
    assert done.returncode == 2, done.stderr
    assert f"{conf}: key 'ingest.coordination': " in done.stderr, done.stderr
    assert "tasks.url" in done.stderr or "[tasks] url" in done.stderr


@pytest.mark.parametrize(
    ("route", "key"),
    [
        ('district = "Bad District!"\n', "alerts.routes.0.district"),
        ('kind = "no_such_kind"\n', "alerts.routes.0.kind"),
        ('district = "chengguan"\n[[alerts.routes.routes]]\nkind = "Cold_Chain"\n',
         "alerts.routes.0.routes.0.kind"),
        ('district = "chengguan"\n[[alerts.routes.routes]]\ndistrict = ""\n',
         "alerts.routes.0.routes.0.district"),
    ],
)
def test_a_route_with_a_bad_district_or_kind_is_a_config_error(tmp_path: Path, route: str, key: str) -> None:
    conf = tmp_path / "alerts.toml"
    conf.write_text("[[alerts.routes]]\n" + route)
    done = _weijian("config", "show", "--config", str(conf))
    assert done.returncode == 2, done.stdout
    assert f"{conf}: key '{key}': " in done.stderr, done.stderr


def test_a_route_with_a_good_district_and_kind_loads(tmp_path: Path) -> None:
    conf = tmp_path / "alerts.toml"
    conf.write_text('[[alerts.routes]]\ndistrict = "chengguan"\nkind = "cold_chain"\n')
    done = _weijian("config", "show", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert '"kind": "cold_chain"' in done.stdout and '"district": "chengguan"' in done.stdout
