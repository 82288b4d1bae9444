"""Upsert folder, data sources and dashboards into a running Grafana with grafana-client.

grafana-client is the ``grafana`` extra (``pip install 'weijian[grafana]'``): it brings niquests
and urllib3-future, which replaces ``urllib3`` in the environment, so the services' own install
does not carry it. Without it, ``push`` says how to install it.

Safe to run again: everything is addressed by uid; a folder or data source that answers 404
is created, one that exists is updated in place; dashboards are posted with
``overwrite: true`` into the folder by ``folderUid``. grafana-client errors stop here and
become :class:`PushFailed`.

Data sources carry their passwords themselves (``[influx] password``, the password in the
tasks URL): Grafana expands ``$__env{...}`` only in provisioning files, and would store the
reference as the password. A data source with no password configured is sent without
``secureJsonData``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dashboards.provisioning import datasources
from dashboards.targets import INFLUX_UID, TASKS_UID
from weijian.config import Settings
from weijian.errors import PushFailed, UsageError

__all__ = ["PushFailed", "PushReport", "push"]

log = logging.getLogger(__name__)

# Where each data source's password comes from, for the message when there is none.
_PASSWORD_KEYS = {
    INFLUX_UID: "[influx] password",
    TASKS_UID: "the password in [grafana] tasks_url (or [tasks] url)",
}


@dataclass
class PushReport:
    """What a push did: ``created`` and ``updated`` name each object (``datasource:uid``)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


def _client(settings: Settings) -> Any:
    # grafana-client ships no type hints: the API object is Any on purpose.
    from grafana_client.api import GrafanaApi
    from grafana_client.client import TokenAuth

    grafana = settings.grafana
    credential: Any = None
    if grafana.token is not None:
        credential = TokenAuth(grafana.token.get_secret_value())  # type: ignore[no-untyped-call]
    elif grafana.username and grafana.password is not None:
        credential = (grafana.username, grafana.password.get_secret_value())
    return GrafanaApi.from_url(grafana.url, credential=credential, timeout=grafana.timeout_s)


def _exists(call: Any, *args: Any) -> bool:
    from grafana_client.client import GrafanaClientError

    try:
        call(*args)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return False
        raise
    return True


def push(settings: Settings, boards: Sequence[dict[str, Any]]) -> PushReport:
    """Upsert the folder, both data sources and every dashboard.

    Raises:
        PushFailed: a request failed (the message names the object and Grafana's answer).
    """
    try:
        from grafana_client.client import GrafanaException
    except ImportError as exc:  # exit 2: something to install, not a Grafana failure
        raise UsageError(
            "weijian dashboards push needs the grafana extra (grafana-client is not installed): "
            "pip install 'weijian[grafana]'"
        ) from exc
    api = _client(settings)
    grafana = settings.grafana
    report = PushReport()
    current = "folder"
    try:
        current = f"folder:{grafana.folder_uid}"
        if _exists(api.folder.get_folder, grafana.folder_uid):
            api.folder.update_folder(grafana.folder_uid, title=grafana.folder_title, overwrite=True)
            report.updated.append(current)
        else:
            api.folder.create_folder(grafana.folder_title, uid=grafana.folder_uid)
            report.created.append(current)
        for source in datasources(settings, with_passwords=True):
            current = f"datasource:{source['uid']}"
            if "secureJsonData" not in source:
                log.info("push.datasource_without_password", extra={
                    "datasource": source["uid"], "user": source.get("user"),
                    "set": _PASSWORD_KEYS[source["uid"]]})
            if _exists(api.datasource.get_datasource_by_uid, source["uid"]):
                api.datasource.update_datasource_by_uid(source["uid"], source)
                report.updated.append(current)
            else:
                api.datasource.create_datasource(source)
                report.created.append(current)
        for board in boards:
            current = f"dashboard:{board['uid']}"
            api.dashboard.update_dashboard({
                "dashboard": {**board, "id": None},
                "folderUid": grafana.folder_uid,
                "overwrite": True,
                "message": "weijian dashboards push",
            })
            report.updated.append(current)
    except GrafanaException as exc:
        raise PushFailed(f"{grafana.url}: {current}: {exc}") from exc
    except OSError as exc:  # connection refused, DNS: niquests raises ConnectionError (an OSError)
        raise PushFailed(f"{grafana.url}: {current}: {exc}") from exc
    log.info("push.done", extra={"n_created": len(report.created), "n_updated": len(report.updated)})
    return report
