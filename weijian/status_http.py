"""``/metrics`` and ``/healthz`` of a long-running process, served by prometheus-client.

``/metrics`` (and every other path but ``/healthz``) is prometheus-client's own WSGI app, so
content negotiation (OpenMetrics), ``?name[]=`` filtering and gzip are its; ``/healthz`` is
the process's JSON state, 200 while ``ok`` is true and 503 otherwise. The server runs in a
thread of its own, so a scrape is answered while the event loop is busy; the health function
runs on the event loop (it reads state the loop owns), with a 5 s limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

__all__ = ["StatusServer"]

log = logging.getLogger(__name__)

_HEALTH_TIMEOUT_S = 5.0

_StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class StatusServer:
    """The HTTP endpoint; :meth:`start` binds it (port 0: any free port), :meth:`close` stops it.

    Args:
        host: address to bind.
        port: port to bind (0: a free one; :attr:`port` is the bound one).
        registry: the metrics to export.
        health: returns the ``/healthz`` body; called on ``loop``.
        loop: the event loop that owns the state ``health`` reads.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], dict[str, Any]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._health = health
        self._loop = loop
        self._server = make_server(host, port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="status-http", daemon=True)

    def start(self) -> StatusServer:
        """Serve from now on."""
        self._thread.start()
        log.info("metrics.listening", extra={"host": self._server.server_address[0], "port": self.port})
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _app(self, environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        try:
            future = asyncio.run_coroutine_threadsafe(_call(self._health), self._loop)
            state = future.result(_HEALTH_TIMEOUT_S)
            status = "200 OK" if state.get("ok") else "503 Service Unavailable"
        except Exception as exc:  # the loop is stuck or gone: that is the answer
            state, status = {"ok": False, "error": f"health check failed: {exc!r}"}, "503 Service Unavailable"
        body = json.dumps(state).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


async def _call(health: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return health()
