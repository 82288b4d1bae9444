"""Channel budgets: a DingTalk robot takes 20 messages a minute (then locks out for about 10
minutes); an SMS number a day's quota. What goes past a budget is folded into one summary
message, counted, and accounted for in the delivery log, never dropped. A local HTTP server
stands in for the robot and checks its signature as DingTalk documents it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.parse
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from alerts.notify import DingTalkRobot, OutboxWorker, build_channels
from alerts.store import OutboxItem, Store
from tests.alerts.conftest import make_settings

SECRET = "SEC-robot"
# In the future of the rows' creation time (now), so that everything queued is due at once.
T0 = datetime.now(UTC).replace(second=5, microsecond=0) + timedelta(minutes=2)


class Robot:
    """Counts signed posts; answers like DingTalk (errcode 0)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.bad = 0
        robot = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                ts, sign = query["timestamp"][0], query["sign"][0]
                digest = hmac.new(SECRET.encode(), f"{ts}\n{SECRET}".encode(), hashlib.sha256).digest()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if sign != base64.b64encode(digest).decode():
                    robot.bad += 1
                robot.texts.append(body["text"]["content"])
                out = b'{"errcode": 0, "errmsg": "ok"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/robot/send?access_token=t"


@pytest.fixture
def robot():  # type: ignore[no-untyped-def]
    r = Robot()
    yield r
    r.server.shutdown()
    r.server.server_close()


def alerts(n: int, start: int = 0) -> list[OutboxItem]:
    return [OutboxItem(f"a{i}:firing:1:0:dingtalk", "dingtalk", "dingtalk",
                       {"text": f"【卫监】告警{i}", "site_id": "s",
                        "idempotency_key": f"a{i}:firing:1:0:dingtalk"},
                       f"a{i}") for i in range(start, start + n)]


async def drain(worker: OutboxWorker) -> None:
    async with httpx.AsyncClient() as client:
        while await worker.run_once(client):
            pass


async def test_100_alerts_in_a_minute_to_one_robot_send_at_most_20_and_summarize_the_rest(
    sqlite_url: str, robot: Robot
) -> None:
    settings = make_settings(sqlite_url, "http://127.0.0.1:9/sms")
    store = Store(sqlite_url)
    clock = {"now": T0}
    worker = OutboxWorker(store, {"dingtalk": DingTalkRobot(robot.url, SECRET, 5)}, settings.alerts,
                          now=lambda: clock["now"])
    store.record([], [], alerts(100))
    await drain(worker)
    assert len(robot.texts) == 20 and robot.bad == 0  # the robot's budget for that minute, no more
    summaries = [t for t in robot.texts if t.startswith("【卫监汇总】")]
    assert len(summaries) == 1  # the minute's last slot: what was folded by then
    # The next minute: the rest of the folded alerts go out as one summary, then new ones alone.
    clock["now"] = T0 + timedelta(seconds=61)
    store.record([], [], alerts(5, start=100))
    await drain(worker)
    summaries = [t for t in robot.texts if t.startswith("【卫监汇总】")]
    assert len(summaries) == 2 and len(robot.texts) == 26
    log = store.deliveries(limit=1000)
    counts: dict[str, int] = {}
    for row in log:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    assert counts == {"delivered": 26, "summarized": 81}  # 24 alerts, 2 summaries, 81 folded into them
    in_summaries = [a for r in log if r["idem_key"].startswith("summary:") for a in r["payload"]["alert_ids"]]
    folded = {r["alert_id"] for r in log if r["status"] == "summarized"}
    assert sorted(in_summaries) == sorted(folded) and len(in_summaries) == 81  # each exactly once
    alone = {r["alert_id"] for r in log
             if r["status"] == "delivered" and not r["idem_key"].startswith("summary:")}
    assert len(alone | folded) == 105  # every alert accounted for
    assert worker.folded == 81
    store.close()


async def test_an_sms_number_over_its_daily_quota_gets_one_summary(  # type: ignore[no-untyped-def]
    sqlite_url: str, receiver
) -> None:
    settings = make_settings(sqlite_url, receiver.url, sms_per_number_per_day=5, rate_per_recipient_per_h=100)
    store = Store(sqlite_url)
    channels = build_channels(settings.sms, settings.alerts)
    worker = OutboxWorker(store, channels, settings.alerts, now=lambda: T0)
    phone = "13800000001"
    items = [OutboxItem(f"k{i}", "sms", phone, {"text": f"告警{i}", "to": phone, "idempotency_key": f"k{i}"},
                        f"a{i}") for i in range(12)]
    store.record([], [], items)
    await drain(worker)
    assert len(receiver.received) == 5  # four alerts and the summary: the day's quota
    assert receiver.received[-1]["reason"] == "summary" and receiver.received[-1]["count"] == 8
    store.close()
