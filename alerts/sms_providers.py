"""SMS through the providers institutes contract: Aliyun (阿里云短信服务) and Tencent Cloud SMS.

Both send a pre-approved template (``[sms] template_code``) under an approved signature
(``sign_name``); the message's fields fill the template's variables (``template_params``:
variable -> field of the message body, by default ``content`` = the alert text). Each request
is signed as the provider documents it:

- Aliyun Dysmsapi ``SendSms`` (version 2017-05-25): RPC style, ``GET`` with the parameters in
  the query, ``Signature = Base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))`` where
  ``StringToSign = "GET&%2F&" + percentEncode(canonicalized query)`` (parameters sorted by
  name, names and values percent-encoded per RFC 3986). Success is ``{"Code": "OK", "BizId"}``.
- Tencent Cloud ``SendSms`` (API 3.0, version 2021-01-11): ``POST`` JSON with a
  ``TC3-HMAC-SHA256`` ``Authorization`` header over the canonical request (method, path, query,
  ``content-type`` and ``host`` headers, the body's SHA-256), keyed by the chain
  ``"TC3" + SecretKey -> date -> "sms" -> "tc3_request"``. Success is each
  ``SendStatusSet[i].Code == "Ok"``, with a ``SerialNo``.

The provider's id for the message (``BizId``, ``SerialNo``) is returned to the outbox, which
records it; the provider's delivery receipt, pushed to the task API, finds the row by it.
Throttling and server errors are retryable; a refused template, signature or number is not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from alerts.store import OutboxItem
from weijian.config import SmsSettings
from weijian.errors import DeliveryFailed

__all__ = ["AliyunSms", "TencentSms", "aliyun_signature", "percent_encode", "tc3_authorization"]

_ALIYUN_ENDPOINT = "https://dysmsapi.aliyuncs.com/"
_TENCENT_ENDPOINT = "https://sms.tencentcloudapi.com/"
# Provider error codes that a later try can get past (throttling, the provider's own trouble).
_ALIYUN_RETRYABLE = ("isv.BUSINESS_LIMIT_CONTROL", "isp.SYSTEM_ERROR", "Throttling", "isv.DAY_LIMIT_CONTROL")
_TENCENT_RETRYABLE = ("LimitExceeded", "InternalError", "RequestLimitExceeded")


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding as Aliyun's RPC signature wants it (space -> %20, ~ kept)."""
    return urllib.parse.quote(value, safe="-_.~")


def aliyun_signature(secret: str, params: dict[str, str], method: str = "GET") -> str:
    """The ``Signature`` of an Aliyun RPC request with ``params`` (without ``Signature``)."""
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def tc3_authorization(secret_id: str, secret_key: str, host: str, body: bytes, timestamp: int,
                      service: str = "sms", content_type: str = "application/json; charset=utf-8") -> str:
    """The ``Authorization`` header of a Tencent Cloud API 3.0 POST (TC3-HMAC-SHA256)."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    canonical = "\n".join([
        "POST", "/", "", f"content-type:{content_type}\nhost:{host}\n", "content-type;host",
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(["TC3-HMAC-SHA256", str(timestamp), scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])

    def sign(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = sign(sign(sign(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders=content-type;host, "
            f"Signature={signature}")


def _template_values(settings: SmsSettings, item: OutboxItem) -> dict[str, str]:
    """The template's variables from the message (SMS variables are short: 500 characters at most)."""
    return {var: str(item.payload.get(field, ""))[:500] for var, field in settings.template_params.items()}


def _phone(item: OutboxItem) -> str:
    return str(item.payload.get("to") or item.recipient)


class AliyunSms:
    """``[sms] provider = "aliyun"``: Dysmsapi SendSms."""

    def __init__(self, settings: SmsSettings, clock: Any = time.time) -> None:
        assert settings.access_key_id and settings.access_key_secret  # checked by SmsSettings
        self.settings = settings
        self.endpoint = settings.endpoint or _ALIYUN_ENDPOINT
        self.clock = clock

    def request_params(self, item: OutboxItem) -> dict[str, str]:
        """The signed query of one SendSms (``OutId`` carries our idempotency key)."""
        s = self.settings
        assert s.access_key_id and s.access_key_secret and s.sign_name and s.template_code
        params = {
            "AccessKeyId": s.access_key_id, "Action": "SendSms", "Format": "JSON",
            "PhoneNumbers": _phone(item), "RegionId": s.region or "cn-hangzhou", "SignName": s.sign_name,
            "SignatureMethod": "HMAC-SHA1", "SignatureNonce": uuid.uuid4().hex, "SignatureVersion": "1.0",
            "TemplateCode": s.template_code,
            "TemplateParam": json.dumps(_template_values(s, item), ensure_ascii=False, separators=(",", ":")),
            "Timestamp": datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": "2017-05-25", "OutId": item.idem_key[:64],
        }
        params["Signature"] = aliyun_signature(s.access_key_secret.get_secret_value(), params)
        return params

    async def send(self, client: httpx.AsyncClient, item: OutboxItem) -> str:
        """Send; returns Aliyun's ``BizId`` for the message."""
        try:
            response = await client.get(self.endpoint, params=self.request_params(item),
                                        timeout=self.settings.timeout_s)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"aliyun: {exc!r}", retryable=True) from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise DeliveryFailed(f"aliyun: HTTP {response.status_code}, not JSON", retryable=True) from exc
        code = str(body.get("Code", ""))
        if code == "OK":
            return str(body.get("BizId", ""))
        retryable = response.status_code >= 500 or code in _ALIYUN_RETRYABLE
        raise DeliveryFailed(f"aliyun: {code}: {body.get('Message', '')}", retryable=retryable)


class TencentSms:
    """``[sms] provider = "tencent"``: Tencent Cloud SMS SendSms, API 3.0."""

    def __init__(self, settings: SmsSettings, clock: Any = time.time) -> None:
        assert settings.access_key_id and settings.access_key_secret and settings.sdk_app_id
        self.settings = settings
        self.endpoint = settings.endpoint or _TENCENT_ENDPOINT
        self.clock = clock

    def request(self, item: OutboxItem) -> tuple[dict[str, str], bytes]:
        """The headers and body of one signed SendSms."""
        s = self.settings
        assert s.access_key_id and s.access_key_secret and s.sdk_app_id
        phone = _phone(item)
        body = json.dumps({
            "PhoneNumberSet": [phone if phone.startswith("+") else f"+86{phone}"],
            "SmsSdkAppId": s.sdk_app_id, "SignName": s.sign_name, "TemplateId": s.template_code,
            "TemplateParamSet": list(_template_values(s, item).values()),
            "SessionContext": item.idem_key,
        }, ensure_ascii=False, separators=(",", ":")).encode()
        host = urllib.parse.urlsplit(self.endpoint).netloc
        stamp = int(self.clock())
        headers = {
            "Authorization": tc3_authorization(s.access_key_id, s.access_key_secret.get_secret_value(),
                                               host, body, stamp),
            "Content-Type": "application/json; charset=utf-8", "Host": host,
            "X-TC-Action": "SendSms", "X-TC-Version": "2021-01-11", "X-TC-Timestamp": str(stamp),
            "X-TC-Region": s.region or "ap-guangzhou",
        }
        return headers, body

    async def send(self, client: httpx.AsyncClient, item: OutboxItem) -> str:
        """Send; returns Tencent's ``SerialNo`` for the message."""
        headers, body = self.request(item)
        try:
            response = await client.post(self.endpoint, content=body, headers=headers,
                                         timeout=self.settings.timeout_s)
            answer = response.json().get("Response", {})
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"tencent: {exc!r}", retryable=True) from exc
        except ValueError as exc:
            raise DeliveryFailed(f"tencent: HTTP {response.status_code}, not JSON", retryable=True) from exc
        error = answer.get("Error")
        if error:
            code = str(error.get("Code", ""))
            raise DeliveryFailed(f"tencent: {code}: {error.get('Message', '')}",
                                 retryable=any(code.startswith(r) for r in _TENCENT_RETRYABLE))
        statuses = answer.get("SendStatusSet") or [{}]
        status = statuses[0]
        if str(status.get("Code", "")) != "Ok":
            code = str(status.get("Code", ""))
            raise DeliveryFailed(f"tencent: {code}: {status.get('Message', '')}",
                                 retryable=any(code.startswith(r) for r in _TENCENT_RETRYABLE))
        return str(status.get("SerialNo", ""))
