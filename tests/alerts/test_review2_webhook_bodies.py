"""The overdue-task and summary SMS webhooks carry exactly the body and headers docs/alerts.md shows.

A firmware_sim scenario (mains failure in a vaccine store) runs through the alert service, its
tasks run past their SLA and the supervisors' daily SMS budget is small, so the service itself
sends ``task_overdue`` and ``summary`` messages to a local relay that records each request.
The documented bodies are read from the docs' JSON examples, not written here again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.conftest import SECRET
from tests.alerts.test_scenarios_e2e import drive
from weijian.registry import Registry

DOCS = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"


@dataclass
class Relay:
    """Records every POST: its headers and raw body; answers 200."""

    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/sms"

    def bodies(self, reason: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for h, b in self.requests if json.loads(b)["reason"] == reason]


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with r.lock:
                r.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    r.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=r.server.serve_forever, daemon=True, name="relay").start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def documented_bodies() -> dict[str, dict[str, Any]]:
    """The JSON examples of the "SMS webhook format" section, by their ``reason``."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("### SMS webhook format", 1)[1].split("\n### ", 1)[0]
    out = {}
    for block in re.findall(r"```json\n(.*?)```", section, flags=re.S):
        example = json.loads(block)
        out[example["reason"]] = example
    return out


def check_headers(headers: dict[str, str], raw: bytes) -> None:
    """What docs/alerts.md tells a relay to expect, checked as a relay would."""
    assert headers["content-type"] == "application/json; charset=utf-8"
    stamp = headers["x-weijian-timestamp"]
    assert stamp.isdigit() and abs(time.time() - int(stamp)) <= 300
    expected = "sha256=" + hmac.new(SECRET, stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-weijian-signature"], expected)
    body = json.loads(raw)
    assert headers["idempotency-key"] == body["idempotency_key"]
    assert list(body) == sorted(body)  # "body (keys sorted)"


async def test_overdue_and_summary_bodies_are_as_documented(
    sqlite_url: str, relay: Relay, registry: Registry
) -> None:
    documented = documented_bodies()
    assert {"task_overdue", "summary"} <= set(documented), sorted(documented)
    service, _ = await drive("cold-chain-mains-failure", sqlite_url, relay, registry,  # type: ignore[arg-type]
                             sms_per_number_per_day=3)
    service.close()
    overdue, summaries = relay.bodies("task_overdue"), relay.bodies("summary")
    assert overdue and summaries
    for reason, sent in (("task_overdue", overdue), ("summary", summaries)):
        for headers, raw in sent:
            check_headers(headers, raw)
            body = json.loads(raw)
            assert set(body) == set(documented[reason]), (reason, sorted(body))
    for _, raw in overdue:
        body = json.loads(raw)
        assert body["idempotency_key"] == f"task:{body['task_id']}:overdue:{body['to']}"
        assert body["level"] == 3 and body["text"].startswith("【卫监督办】")
    for _, raw in summaries:
        body = json.loads(raw)
        assert body["idempotency_key"].startswith(f"summary:sms:{body['to']}:")
        assert body["count"] >= 1 and body["alert_ids"] and body["text"].startswith("【卫监汇总】")
