"""Grafana provisioning from disk: dashboard JSON, data sources YAML and a dashboard provider.

Layout under ``--out DIR`` (mount ``DIR/provisioning`` at ``/etc/grafana/provisioning`` and
``DIR/dashboards`` at :data:`DASHBOARDS_PATH`)::

    provisioning/datasources/weijian.yaml   InfluxDB (InfluxQL) and PostgreSQL (tasks)
    provisioning/dashboards/weijian.yaml    a file provider reading DASHBOARDS_PATH
    dashboards/<uid>.json                   one file per dashboard

Passwords never land in the files: they are written as ``$__env{VAR}`` references, which
Grafana expands from its environment when it reads the file (and only then: its HTTP API
stores what it is sent, so ``push`` sends the passwords themselves, see :func:`datasources`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import yaml

from dashboards.targets import INFLUX_TYPE, INFLUX_UID, TASKS_TYPE, TASKS_UID
from weijian.config import Settings
from weijian.errors import ConfigError

__all__ = ["DASHBOARDS_PATH", "datasources", "provider", "write_provisioning"]

log = logging.getLogger(__name__)

DASHBOARDS_PATH: Final = "/var/lib/grafana/dashboards/weijian"
# The setting that holds the password itself, so one environment serves weijian and Grafana.
INFLUX_PASSWORD_ENV: Final = "WEIJIAN_INFLUX__PASSWORD"
# The tasks password is part of a URL, not a setting of its own. A single underscore keeps the
# name out of the WEIJIAN_<SECTION>__<KEY> overrides, where an unknown key is an error: Grafana's
# environment may be shared with weijian's.
TASKS_PASSWORD_ENV: Final = "WEIJIAN_GRAFANA_TASKS_PASSWORD"
_DEFAULT_TASKS_URL: Final = "postgresql://weijian@127.0.0.1:5432/weijian"


def _influx_source(settings: Settings, with_passwords: bool) -> dict[str, Any]:
    influx = settings.influx
    source: dict[str, Any] = {
        "name": "weijian InfluxDB",
        "uid": INFLUX_UID,
        "type": INFLUX_TYPE,
        "access": "proxy",
        "url": settings.grafana.influx_url or influx.url,
        "isDefault": True,
        # InfluxQL through the 1.x API, which InfluxDB 2.x/3.x also serve (v1 compatibility).
        "jsonData": {"version": "InfluxQL", "dbName": influx.database, "httpMode": "GET",
                     "timeInterval": f"{round(settings.grafana.expected_interval_s)}s"},
        "editable": False,
    }
    if influx.username:
        source["user"] = influx.username
    if influx.password is not None:
        secret = influx.password.get_secret_value()
        password = secret if with_passwords else f"$__env{{{INFLUX_PASSWORD_ENV}}}"
        source["secureJsonData"] = {"password": password}
    return source


def _tasks_source(settings: Settings, with_passwords: bool) -> dict[str, Any]:
    url = settings.grafana.tasks_url or settings.tasks.url
    if not url.startswith("postgresql"):
        # Grafana has no built-in SQLite data source: point at the usual PostgreSQL instead.
        log.warning("provisioning.tasks_not_postgres", extra={"tasks_url_scheme": url.split(":")[0]})
        url = _DEFAULT_TASKS_URL
    parts = urlsplit(url)
    if not parts.hostname or not parts.path.strip("/"):
        shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url  # no secret in errors
        raise ConfigError(f"key 'grafana.tasks_url': {shown!r} needs a host and a database name")
    source: dict[str, Any] = {
        "name": "weijian tasks",
        "uid": TASKS_UID,
        "type": TASKS_TYPE,
        "access": "proxy",
        "url": f"{parts.hostname}:{parts.port or 5432}",
        "user": unquote(parts.username or "weijian"),
        "jsonData": {"database": parts.path.strip("/"), "sslmode": "disable", "postgresVersion": 1500},
        "editable": False,
    }
    if parts.password:
        password = unquote(parts.password) if with_passwords else f"$__env{{{TASKS_PASSWORD_ENV}}}"
        source["secureJsonData"] = {"password": password}
    return source


def datasources(settings: Settings, *, with_passwords: bool = False) -> list[dict[str, Any]]:
    """The two data sources, as provisioning entries (also the body ``push`` sends).

    Args:
        settings: ``[influx]``, ``[tasks]`` and ``[grafana]`` are read.
        with_passwords: False (files): a password is a ``$__env{VAR}`` reference
            (:data:`INFLUX_PASSWORD_ENV`, :data:`TASKS_PASSWORD_ENV`). True (``push``): the
            password itself, from ``[influx] password`` and the tasks URL, since Grafana's
            HTTP API does not expand references. Either way, no password configured: no
            ``secureJsonData``.

    Raises:
        ConfigError: the tasks URL cannot be turned into a data source.
    """
    return [_influx_source(settings, with_passwords), _tasks_source(settings, with_passwords)]


def provider(settings: Settings) -> dict[str, Any]:
    """The dashboard provider: files under :data:`DASHBOARDS_PATH`, in the weijian folder."""
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "weijian",
            "orgId": settings.grafana.org_id,
            "folder": settings.grafana.folder_title,
            "folderUid": settings.grafana.folder_uid,
            "type": "file",
            "disableDeletion": False,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 30,
            "options": {"path": DASHBOARDS_PATH, "foldersFromFilesStructure": False},
        }],
    }


def write_provisioning(out: Path, settings: Settings, boards: list[dict[str, Any]]) -> list[Path]:
    """Write every file under ``out`` and return their paths.

    Raises:
        ConfigError: the tasks URL cannot be turned into a data source.
        OSError: a file cannot be written.
    """
    written: list[Path] = []

    def put(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    sources = {"apiVersion": 1, "datasources": [
        {**s, "orgId": settings.grafana.org_id} for s in datasources(settings)
    ]}
    put(out / "provisioning" / "datasources" / "weijian.yaml",
        yaml.safe_dump(sources, allow_unicode=True, sort_keys=False))
    put(out / "provisioning" / "dashboards" / "weijian.yaml",
        yaml.safe_dump(provider(settings), allow_unicode=True, sort_keys=False))
    for board in boards:
        put(out / "dashboards" / f"{board['uid']}.json", json.dumps(board, ensure_ascii=False, indent=2))
    log.info("provisioning.written", extra={"out": str(out), "files": len(written)})
    return written
