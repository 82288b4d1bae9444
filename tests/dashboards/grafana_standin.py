"""A local stand-in for the parts of Grafana's HTTP API that ``dashboards push`` uses.

Grafana cannot be installed here, so this server checks each request the way Grafana's
documented API does (Folder, Data source and Dashboard HTTP APIs): paths and methods, the
``Authorization: Bearer`` header, JSON bodies with the required keys, 404 for a missing
folder or data source, 409 for a duplicate, 412 for a dashboard uid that exists unless
``overwrite: true``, and a version that grows on every save.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class GrafanaState:
    """What the stand-in holds, and every request it was sent."""

    token: str
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _handler(state: GrafanaState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            state.requests.append((self.command, self.path, status))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any] | None:
            if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                state.problems.append(f"{self.command} {self.path}: Content-Type is not application/json")
                return None
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"null")
            return body if isinstance(body, dict) else None

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self._reply(401, {"message": "Unauthorized"})
                return False
            return True

        def _missing(self, body: dict[str, Any] | None, keys: tuple[str, ...]) -> bool:
            absent = [k for k in keys if body is None or not body.get(k)]
            if absent:
                state.problems.append(f"{self.command} {self.path}: missing {absent}")
                self._reply(400, {"message": f"bad request data: missing {absent}"})
            return bool(absent)

        def do_GET(self) -> None:
            if not self._authorised():
                return
            if m := re.fullmatch(r"/api/folders/([\w-]+)", self.path):
                folder = state.folders.get(m.group(1))
                self._reply(200, folder) if folder else self._reply(404, {"message": "folder not found"})
            elif m := re.fullmatch(r"/api/datasources/uid/([\w-]+)", self.path):
                source = state.datasources.get(m.group(1))
                self._reply(200, source) if source else self._reply(404, {"message": "Data source not found"})
            else:
                self._reply(404, {"message": "Not found"})

        def do_POST(self) -> None:
            if not self._authorised():
                return
            body = self._body()
            if self.path == "/api/folders":
                if self._missing(body, ("title", "uid")):
                    return
                assert body is not None
                if body["uid"] in state.folders:
                    self._reply(409, {"message": "a folder with the same uid already exists"})
                    return
                state.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "version": 1}
                self._reply(200, state.folders[body["uid"]])
            elif self.path == "/api/datasources":
                if self._missing(body, ("name", "type", "access", "url", "uid")):
                    return
                assert body is not None
                if any(s["name"] == body["name"] for s in state.datasources.values()):
                    self._reply(409, {"message": "data source with the same name already exists"})
                    return
                state.datasources[body["uid"]] = {**body, "id": len(state.datasources) + 1}
                added = state.datasources[body["uid"]]
                self._reply(200, {"message": "Datasource added", "datasource": added})
            elif self.path == "/api/dashboards/db":
                self._save_dashboard(body)
            else:
                self._reply(404, {"message": "Not found"})

        def _save_dashboard(self, body: dict[str, Any] | None) -> None:
            if self._missing(body, ("dashboard",)):
                return
            assert body is not None
            board = body["dashboard"]
            if self._missing(board, ("uid", "title")):
                return
            folder = body.get("folderUid")
            if folder not in state.folders:
                self._reply(400, {"message": "folder not found"})
                return
            known = state.dashboards.get(board["uid"])
            if known is not None and body.get("overwrite") is not True:
                self._reply(412, {"status": "name-exists", "message": "A dashboard with the same uid exists"})
                return
            if board.get("id") is not None and known is None:
                self._reply(404, {"status": "not-found", "message": "Dashboard not found"})
                return
            version = (known["version"] + 1) if known else 1
            state.dashboards[board["uid"]] = {"dashboard": board, "folderUid": folder, "version": version}
            self._reply(200, {"status": "success", "uid": board["uid"], "version": version,
                              "url": f"/d/{board['uid']}"})

        def do_PUT(self) -> None:
            if not self._authorised():
                return
            body = self._body()
            if m := re.fullmatch(r"/api/folders/([\w-]+)", self.path):
                if self._missing(body, ("title",)):
                    return
                assert body is not None
                folder = state.folders.get(m.group(1))
                if folder is None:
                    self._reply(404, {"message": "folder not found"})
                elif body.get("overwrite") is not True and body.get("version") != folder["version"]:
                    self._reply(412, {"message": "the folder has been changed by someone else"})
                else:
                    folder.update(title=body["title"], version=folder["version"] + 1)
                    self._reply(200, folder)
            elif m := re.fullmatch(r"/api/datasources/uid/([\w-]+)", self.path):
                if self._missing(body, ("name", "type", "access")):
                    return
                assert body is not None
                if m.group(1) not in state.datasources:
                    self._reply(404, {"message": "Data source not found"})
                    return
                state.datasources[m.group(1)] = {**body, "id": state.datasources[m.group(1)]["id"]}
                updated = state.datasources[m.group(1)]
                self._reply(200, {"message": "Datasource updated", "datasource": updated})
            else:
                self._reply(404, {"message": "Not found"})

    return Handler


@contextmanager
def grafana_standin(token: str) -> Iterator[tuple[str, GrafanaState]]:
    """Serve the stand-in on a free loopback port; yields ``(url, state)``."""
    state = GrafanaState(token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, name="grafana-standin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
