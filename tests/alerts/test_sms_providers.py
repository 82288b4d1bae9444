"""SMS through Aliyun and Tencent Cloud, against local stand-ins that check each request's
signature as the provider documents it (written here from the providers' docs, not with
weijian's signing code), then the providers' delivery receipts pushed to the task API and
mapped back to the delivery log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.parse
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from alerts.api import build_app
from alerts.notify import OutboxWorker, build_channels
from alerts.store import OutboxItem, Store
from weijian.config import Settings

KEY_ID, KEY_SECRET = "LTAI-test-id", "test-secret/with+chars"
PHONES = ["13800000001", "13800000002"]


def aliyun_ok(query: dict[str, str]) -> bool:
    """Aliyun RPC signature: sort, RFC 3986-encode, "GET&%2F&" + encode(query), HMAC-SHA1(secret&)."""
    def enc(v: str) -> str:
        return urllib.parse.quote(v, safe="~").replace("%7E", "~")
    params = {k: v for k, v in query.items() if k != "Signature"}
    canonical = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params.items()))
    to_sign = "GET&" + enc("/") + "&" + enc(canonical)
    want = base64.b64encode(hmac.new((KEY_SECRET + "&").encode(), to_sign.encode(), hashlib.sha1).digest())
    return hmac.compare_digest(want.decode(), query.get("Signature", ""))


def tencent_ok(headers: Any, body: bytes, host: str) -> bool:
    """TC3-HMAC-SHA256 over POST / with content-type and host signed, keys TC3+secret/date/sms/tc3_request."""
    auth = headers["Authorization"]
    stamp = int(headers["X-TC-Timestamp"])
    date = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")
    canonical = (f"POST\n/\n\ncontent-type:{headers['Content-Type']}\nhost:{host}\n\ncontent-type;host\n"
                 + hashlib.sha256(body).hexdigest())
    scope = f"{date}/sms/tc3_request"
    to_sign = f"TC3-HMAC-SHA256\n{stamp}\n{scope}\n" + hashlib.sha256(canonical.encode()).hexdigest()
    k = hmac.new(("TC3" + KEY_SECRET).encode(), date.encode(), hashlib.sha256).digest()
    for part in ("sms", "tc3_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    want = f"TC3-HMAC-SHA256 Credential={KEY_ID}/{scope}, SignedHeaders=content-type;host, Signature={sig}"
    return hmac.compare_digest(auth, want)


class Provider:
    """The stand-in: answers as the provider does, refusing a bad signature."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            def reply(self, body: dict[str, Any]) -> None:
                out = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self) -> None:  # Aliyun
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                if not aliyun_ok(query):
                    self.reply({"Code": "SignatureDoesNotMatch", "Message": "signature not matched"})
                    return
                me.requests.append({"provider": "aliyun", **query})
                self.reply({"Code": "OK", "Message": "OK", "BizId": f"biz-{len(me.requests)}",
                            "RequestId": "r"})

            def do_POST(self) -> None:  # Tencent
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not tencent_ok(self.headers, body, self.headers["Host"]):
                    self.reply({"Response": {"Error": {"Code": "AuthFailure.SignatureFailure",
                                                       "Message": "signature"}, "RequestId": "r"}})
                    return
                request = json.loads(body)
                me.requests.append({"provider": "tencent", **request})
                self.reply({"Response": {"SendStatusSet": [{
                    "SerialNo": f"serial-{len(me.requests)}", "PhoneNumber": request["PhoneNumberSet"][0],
                    "Code": "Ok", "Message": "send success"}], "RequestId": "r"}})

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/"


@pytest.fixture
def provider():  # type: ignore[no-untyped-def]
    p = Provider()
    yield p
    p.server.shutdown()
    p.server.server_close()


def settings(url: str, provider: Provider, name: str, secret: str = KEY_SECRET) -> Settings:
    return Settings(tasks={"url": url}, sms={
        "provider": name, "access_key_id": KEY_ID, "access_key_secret": secret, "sign_name": "卫监",
        "template_code": "SMS_123" if name == "aliyun" else "1234567", "sdk_app_id": "1400000001",
        "template_params": {"content": "text"}, "endpoint": provider.endpoint, "receipt_token": "rcpt-1",
    })


def queue(store: Store) -> None:
    store.record([], [], [OutboxItem(f"alert-{i}:firing:1:0:sms:{p}", "sms", p,
                                     {"text": f"【卫监】冷库断电{i}", "to": p}, f"alert-{i}")
                          for i, p in enumerate(PHONES)])


async def deliver(s: Settings, store: Store) -> None:
    worker = OutboxWorker(store, build_channels(s.sms, s.alerts), s.alerts)
    async with httpx.AsyncClient() as client:
        while await worker.run_once(client):
            pass


@pytest.mark.parametrize("name", ["aliyun", "tencent"])
async def test_sends_are_signed_as_documented_and_receipts_reach_the_delivery_log(
    sqlite_url: str, provider: Provider, name: str
) -> None:
    s = settings(sqlite_url, provider, name)
    store = Store(sqlite_url)
    queue(store)
    await deliver(s, store)
    assert len(provider.requests) == 2
    for request in provider.requests:
        if name == "aliyun":
            assert request["SignName"] == "卫监" and request["TemplateCode"] == "SMS_123"
            assert json.loads(request["TemplateParam"])["content"].startswith("【卫监】冷库断电")
            assert request["PhoneNumbers"] in PHONES
        else:
            assert request["TemplateId"] == "1234567" and request["SmsSdkAppId"] == "1400000001"
            assert request["PhoneNumberSet"][0] in {f"+86{p}" for p in PHONES}
            assert request["TemplateParamSet"][0].startswith("【卫监】冷库断电")
    log = {r["recipient"]: r for r in store.deliveries()}
    assert all(r["status"] == "delivered" and r["provider_ref"] for r in log.values())
    # The provider pushes its receipts: one delivered, one failed at the handset.
    first, second = log[PHONES[0]], log[PHONES[1]]
    if name == "aliyun":
        path = "/sms/receipts/aliyun"
        body = [{"phone_number": PHONES[0], "success": True, "err_code": "DELIVERED",
                 "err_msg": "用户接收成功", "report_time": "2026-07-15 10:03:04",
                 "biz_id": first["provider_ref"], "out_id": first["idem_key"]},
                {"phone_number": PHONES[1], "success": False, "err_code": "MK:0001", "err_msg": "空号",
                 "report_time": "2026-07-15 10:03:05", "biz_id": second["provider_ref"]}]
        ack = {"code": 0, "msg": "成功"}
    else:
        path = "/sms/receipts/tencent"
        body = [{"user_receive_time": "2026-07-15 10:03:04", "nationcode": "86", "mobile": PHONES[0],
                 "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "用户短信送达成功",
                 "sid": first["provider_ref"]},
                {"user_receive_time": "2026-07-15 10:03:05", "nationcode": "86", "mobile": PHONES[1],
                 "report_status": "FAIL", "errmsg": "MK:0001", "description": "空号",
                 "sid": second["provider_ref"]}]
        ack = {"result": 0, "errmsg": "OK"}
    app = build_app(store, [], receipt_token="rcpt-1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:
        assert (await api.post(path, json=body)).status_code == 404  # no token: not even there
        answer = await api.post(f"{path}?token=rcpt-1", json=body)
    assert answer.status_code == 200 and answer.json() == ack
    log = {r["recipient"]: r for r in store.deliveries()}
    assert log[PHONES[0]]["receipt"] == "DELIVERED"
    assert log[PHONES[1]]["receipt"] == "MK:0001"
    assert log[PHONES[0]]["receipt_at"] == datetime(2026, 7, 15, 2, 3, 4, tzinfo=UTC)
    store.close()


@pytest.mark.parametrize("name", ["aliyun", "tencent"])
async def test_a_wrong_secret_is_refused_by_the_provider_and_recorded_as_failed(
    sqlite_url: str, provider: Provider, name: str
) -> None:
    s = settings(sqlite_url, provider, name, secret="not-the-secret")
    store = Store(sqlite_url)
    queue(store)
    await deliver(s, store)
    assert provider.requests == []
    log = store.deliveries()
    assert {r["status"] for r in log} == {"failed"}
    assert all("Signature" in (r["last_error"] or "") for r in log)
    store.close()
