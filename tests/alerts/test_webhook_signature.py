"""The SMS webhook's signature covers its timestamp: a request captured on the wire and sent
again under a fresh timestamp fails verification, and so does one replayed after the window."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx
import pytest

from alerts.notify import SmsWebhook
from alerts.store import OutboxItem
from weijian.config import SmsSettings
from weijian.contract import SIGNATURE_WINDOW_S, verify_webhook
from weijian.demo.sms_inbox import SmsInbox

SECRET = b"relay-shared-secret"


@pytest.fixture
def inbox(tmp_path):  # type: ignore[no-untyped-def]
    box = SmsInbox(SECRET, tmp_path / "sms.jsonl")
    box.start()
    yield box
    box.stop()


async def _capture(inbox: SmsInbox) -> httpx.Request:
    """Send one message through the real webhook channel to the relay, keeping the request."""
    sent: list[httpx.Request] = []

    async def keep(request: httpx.Request) -> None:
        sent.append(request)

    channel = SmsWebhook(SmsSettings(url=inbox.url, secret=SECRET.decode()))
    item = OutboxItem("alert-1:firing:1:0:sms:13800000001", "sms", "13800000001",
                      {"text": "【卫监】测试", "to": "13800000001", "idempotency_key": "k1"})
    async with httpx.AsyncClient(event_hooks={"request": [keep]}) as client:
        await channel.send(client, item)
    assert len(inbox.messages) == 1  # the relay took the genuine request
    return sent[0]


def test_the_signature_is_the_documented_hmac_over_timestamp_and_body() -> None:
    body, stamp = b'{"text": "x"}', int(time.time())
    # docs/alerts.md: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>
    signature = "sha256=" + hmac.new(SECRET, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert verify_webhook(SECRET, body, signature, str(stamp), now=stamp)
    assert not verify_webhook(SECRET, body + b" ", signature, str(stamp), now=stamp)
    assert not verify_webhook(b"other", body, signature, str(stamp), now=stamp)


async def test_a_replay_with_a_new_timestamp_fails_and_so_does_a_stale_one(inbox: SmsInbox) -> None:
    request = await _capture(inbox)
    body, signature = request.content, request.headers["X-Weijian-Signature"]
    stamp = int(request.headers["X-Weijian-Timestamp"])
    assert verify_webhook(SECRET, body, signature, str(stamp), now=time.time())
    # An attacker re-sends the captured body and signature under a fresh timestamp.
    fresh = str(stamp + 60)
    assert not verify_webhook(SECRET, body, signature, fresh, now=stamp + 60)
    # Or replays it unchanged after the window.
    assert not verify_webhook(SECRET, body, signature, str(stamp), now=stamp + SIGNATURE_WINDOW_S + 1)
    async with httpx.AsyncClient() as client:
        answer = await client.post(inbox.url, content=body, headers={
            "Content-Type": "application/json", "X-Weijian-Signature": signature,
            "X-Weijian-Timestamp": fresh,
        })
    assert answer.status_code == 401
    assert len(inbox.messages) == 1 and inbox.rejected == 1
