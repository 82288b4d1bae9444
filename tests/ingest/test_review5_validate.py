"""Review 5: ``classify()`` checks the kind against the registry and refuses statuses like readings.

Pure functions over the example registry; every expectation is one docs/contract.md states.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ingest.validate import classify
from weijian.contract import (
    MAX_PAYLOAD_BYTES,
    GatewayStatus,
    Reading,
    Rejection,
    RejectReason,
    offline_status,
    status_payload,
)
from weijian.registry import Registry

ROOT = "weijian/v1"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
GATEWAY = "gw-chengguan-water"
STATUS_TOPIC = f"{ROOT}/gateways/{GATEWAY}/status"


def _reading(site: str = "yc-water-001", device: str = "wq-01", **changes: Any) -> tuple[str, bytes]:
    body: dict[str, Any] = {
        "site_id": site, "device_id": device, "gateway_id": GATEWAY, "kind": "drinking_water",
        "ts": "2026-11-22T07:59:00.000Z", "seq": 7,
        "metrics": {"temperature": {"value": 12.0, "unit": "degC", "flag": "N"}},
    }
    body.update(changes)
    return f"{ROOT}/{site}/{device}/reading", json.dumps(body).encode()


def _classify(message: tuple[str, bytes], registry: Registry) -> object:
    return classify(message[0], message[1], root=ROOT, now=NOW, registry=registry)


# --- 2. kind_mismatch ---------------------------------------------------------------------

def test_a_kind_other_than_the_registrys_is_kind_mismatch(registry: Registry) -> None:
    # cold_chain metrics, valid in themselves, from a drinking_water site's device
    message = _reading(kind="cold_chain", metrics={"temperature": {"value": 5.0, "unit": "degC", "flag": "N"},
                                                   "door_open": {"value": 0, "unit": "0/1", "flag": "N"}})
    verdict = _classify(message, registry)
    assert isinstance(verdict, Rejection), verdict
    assert (verdict.reason, verdict.field) == (RejectReason.KIND_MISMATCH, "kind")
    assert "drinking_water" in verdict.detail and "cold_chain" in verdict.detail


def test_the_registrys_kind_passes(registry: Registry) -> None:
    assert isinstance(_classify(_reading(), registry), Reading)
    cold = _reading("yc-cc-001", "fr-01", kind="cold_chain", gateway_id="gw-chengguan-public")
    assert isinstance(_classify(cold, registry), Reading)


def test_kind_mismatch_comes_after_unknown_device_and_before_gateway_mismatch(registry: Registry) -> None:
    verdict = _classify(_reading(device="wq-99", kind="cold_chain"), registry)
    assert isinstance(verdict, Rejection)
    assert verdict.reason is RejectReason.UNKNOWN_DEVICE
    verdict = _classify(_reading(kind="cold_chain", gateway_id="gw-xinhe"), registry)
    assert isinstance(verdict, Rejection)
    assert verdict.reason is RejectReason.KIND_MISMATCH


def test_future_timestamp_is_reported_before_topic_mismatch(registry: Registry) -> None:
    ahead = (NOW + timedelta(hours=1)).isoformat()
    topic, payload = _reading(ts=ahead, device_id="zz-99")
    verdict = classify(topic, payload, root=ROOT, now=NOW, registry=registry)
    assert isinstance(verdict, Rejection)
    assert verdict.reason is RejectReason.FUTURE_TIMESTAMP


# --- 5. statuses are refused with the same reasons as readings ----------------------------

def _status(**changes: Any) -> bytes:
    body: dict[str, Any] = {"gateway_id": GATEWAY, "state": "online", "ts": "2026-11-22T07:59:00.000Z",
                            "uptime_s": 5, "queue_depth": 0}
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("payload", "reason", "field"),
    [
        (_status(gateway_id="GW"), RejectReason.BAD_IDENTIFIER, "gateway_id"),
        (_status(gateway_id="gw.x"), RejectReason.BAD_IDENTIFIER, "gateway_id"),
        (_status(pad="x" * 70_000), RejectReason.TOO_LARGE, "payload"),
        (_status(ts="2026-11-22T07:59:00"), RejectReason.NAIVE_TIMESTAMP, "ts"),
        (_status(ts="1767225600"), RejectReason.WRONG_TYPE, "ts"),
        (_status(ts="2026-11-22T07:59:00+0800"), RejectReason.WRONG_TYPE, "ts"),
        (_status(ts="2026-11-22T07:59Z"), RejectReason.WRONG_TYPE, "ts"),
        (_status(ts=1767225600), RejectReason.WRONG_TYPE, "ts"),
        (_status(state="asleep"), RejectReason.WRONG_TYPE, "state"),
        (json.dumps({"gateway_id": GATEWAY, "ts": "2026-11-22T07:59:00Z"}).encode(),
         RejectReason.MISSING_FIELD, "state"),
        (b"\xff\xfe{}", RejectReason.INVALID_UTF8, "payload"),
        (b"{not json", RejectReason.MALFORMED_JSON, "payload"),
        (b"[]", RejectReason.WRONG_TYPE, "payload"),
        (_status(gateway_id="gw-xinhe"), RejectReason.TOPIC_MISMATCH, "gateway_id"),
        (_status(ts="2026-11-22T09:00:00Z"), RejectReason.FUTURE_TIMESTAMP, "ts"),
    ],
)
def test_a_bad_status_gets_the_documented_reason(
    payload: bytes, reason: RejectReason, field: str, registry: Registry
) -> None:
    verdict = classify(STATUS_TOPIC, payload, root=ROOT, now=NOW, registry=registry)
    assert isinstance(verdict, Rejection), verdict
    assert (verdict.reason, verdict.field) == (reason, field)


def test_a_status_of_exactly_64_kib_is_not_too_large(registry: Registry) -> None:
    payload = _status(pad="")
    payload = payload[:-1] + b' ' * (MAX_PAYLOAD_BYTES - len(payload)) + b"}"
    assert len(payload) == MAX_PAYLOAD_BYTES
    assert isinstance(classify(STATUS_TOPIC, payload, root=ROOT, now=NOW, registry=registry), GatewayStatus)


def test_the_gateways_own_statuses_pass(registry: Registry) -> None:
    for ts in (NOW - timedelta(seconds=3, microseconds=123456), NOW.astimezone(timezone(timedelta(hours=8)))):
        payload = status_payload(offline_status(GATEWAY, ts))
        verdict = classify(STATUS_TOPIC, payload, root=ROOT, now=NOW, registry=registry)
        assert isinstance(verdict, GatewayStatus), (payload, verdict)
        assert verdict.ts == ts
    verdict = classify(STATUS_TOPIC, _status(), root=ROOT, now=NOW, registry=registry)
    assert isinstance(verdict, GatewayStatus)
    assert verdict.model_extra == {"uptime_s": 5, "queue_depth": 0}
