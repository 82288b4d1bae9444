"""A local stand-in for an SMS relay: receives weijian's webhook POSTs and keeps them.

``weijian demo`` runs one so the whole chain can be watched without a real SMS provider:
each message's timestamp and HMAC-SHA256 signature are checked as docs/alerts.md tells a relay
to (:func:`weijian.contract.verify_webhook`), and it is appended to a JSON-lines file and handed
to a callback (the demo prints it). It answers 200 to good requests and 401 to badly signed or
stale ones, as a real relay should.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from weijian.contract import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_webhook

__all__ = ["SmsInbox"]


@dataclass
class SmsInbox:
    """An HTTP server on 127.0.0.1 that records every signed JSON message it receives."""

    secret: bytes
    log_path: Path
    on_message: Callable[[dict[str, Any]], None] = lambda _message: None
    messages: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """Where to POST."""
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/sms"

    def start(self) -> None:
        """Listen on a free port in a background thread."""
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = inbox._accept(body, {k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}' if status == 200 else b'{"ok": false}')

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the inbox reports messages itself

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="sms-inbox", daemon=True).start()

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _accept(self, body: bytes, headers: dict[str, str]) -> int:
        signature = headers.get(SIGNATURE_HEADER.lower(), "")
        stamp = headers.get(TIMESTAMP_HEADER.lower(), "")
        if not verify_webhook(self.secret, body, signature, stamp, now=time.time()):
            with self._lock:
                self.rejected += 1
            return 401
        try:
            message = json.loads(body)
        except ValueError:
            return 400
        if not isinstance(message, dict):
            return 400
        with self._lock:
            self.messages.append(message)
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(json.dumps(message, ensure_ascii=False) + "\n")
        self.on_message(message)
        return 200
