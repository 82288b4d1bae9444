"""The wire contract: every rejection CONTRACT.md lists, and round trips of valid readings."""

from __future__ import annotations

import json
import math
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import weijian.contract as contract
from weijian.contract import (
    CATALOGUE,
    Flag,
    Kind,
    Reading,
    Rejection,
    RejectReason,
    decode_reading,
    encode_reading,
    parse_reading_topic,
    reading_topic,
    status_topic,
)

NOW = datetime(2026, 11, 22, 8, 1, tzinfo=UTC)
ROOT = "weijian/v1"
TOPIC = "weijian/v1/yc-water-001/cl-01/reading"


def valid_payload() -> dict[str, Any]:
    return {
        "site_id": "yc-water-001",
        "device_id": "cl-01",
        "gateway_id": "gw-yc-001",
        "kind": "drinking_water",
        "ts": "2026-11-22T08:00:00.000Z",
        "seq": 1042,
        "metrics": {
            "free_chlorine": {"value": 0.42, "unit": "mg/L", "flag": "N"},
            "turbidity": {"value": 0.31, "unit": "NTU", "flag": "N"},
        },
    }


def with_change(path: str, value: Any) -> bytes:
    """The valid payload with one key set (or deleted, for ``...``), as JSON bytes."""
    payload = valid_payload()
    *parents, last = path.split(".")
    node = payload
    for part in parents:
        node = node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return json.dumps(payload).encode()


def test_the_contract_example_is_accepted_and_normalised_to_utc() -> None:
    payload = with_change("ts", "2026-11-22T16:00:00.000+08:00")
    reading = decode_reading(TOPIC, payload, now=NOW)
    assert isinstance(reading, Reading)
    assert reading.ts == datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    assert reading.metrics["turbidity"].value == pytest.approx(0.31)
    assert json.loads(encode_reading(reading))["ts"] == "2026-11-22T08:00:00.000Z"


def test_resent_is_optional_written_only_when_true_and_strictly_boolean() -> None:
    live = decode_reading(TOPIC, with_change("ts", "2026-11-22T08:00:00Z"), now=NOW)
    assert isinstance(live, Reading) and not live.resent
    assert "resent" not in json.loads(encode_reading(live))  # a live reading's payload is unchanged
    backlog = decode_reading(TOPIC, with_change("resent", True), now=NOW)
    assert isinstance(backlog, Reading) and backlog.resent
    assert json.loads(encode_reading(backlog))["resent"] is True
    refused = decode_reading(TOPIC, with_change("resent", "yes"), now=NOW)
    assert isinstance(refused, Rejection) and refused.field == "resent"


REJECTIONS = [
    # (case, payload bytes, reason, field)
    ("malformed JSON", b'{"site_id": ', RejectReason.MALFORMED_JSON, "payload"),
    ("not an object", b"[1, 2]", RejectReason.WRONG_TYPE, "payload"),
    ("deep nesting", b"[" * 5000 + b"]" * 5000, RejectReason.MALFORMED_JSON, "payload"),
    ("invalid UTF-8", b'{"site_id": "\xff\xfe"}', RejectReason.INVALID_UTF8, "payload"),
    ("over 64 KiB", b" " * (64 * 1024 + 1), RejectReason.TOO_LARGE, "payload"),
    ("unknown kind", with_change("kind", "beer_tap"), RejectReason.UNKNOWN_KIND, "kind"),
    ("unknown metric", with_change("metrics.lead", {"value": 1.0, "unit": "mg/L", "flag": "N"}),
     RejectReason.UNKNOWN_METRIC, "metrics.lead"),
    ("metric of another kind", with_change("metrics.orp", {"value": 700, "unit": "mV", "flag": "N"}),
     RejectReason.UNKNOWN_METRIC, "metrics.orp"),
    ("wrong unit", with_change("metrics.turbidity.unit", "FNU"),
     RejectReason.WRONG_UNIT, "metrics.turbidity.unit"),
    ("bad site id", with_change("site_id", "YC water"), RejectReason.BAD_IDENTIFIER, "site_id"),
    ("bad gateway id", with_change("gateway_id", "-gw"), RejectReason.BAD_IDENTIFIER, "gateway_id"),
    ("id too long", with_change("gateway_id", "g" * 65), RejectReason.BAD_IDENTIFIER, "gateway_id"),
    ("NaN", b'{"site_id":"yc-water-001","device_id":"cl-01","gateway_id":"g","kind":'
     b'"drinking_water","ts":"2026-11-22T08:00:00Z","seq":1,"metrics":{"ph":'
     b'{"value":NaN,"unit":"pH","flag":"N"}}}', RejectReason.NON_FINITE, "metrics.ph.value"),
    ("infinity", with_change("metrics.turbidity.value", 1e999).replace(b"Infinity", b"1e999"),
     RejectReason.NON_FINITE, "metrics.turbidity.value"),
    ("null value with flag N", with_change("metrics.turbidity.value", None),
     RejectReason.NULL_VALUE, "metrics.turbidity.value"),
    ("unknown flag", with_change("metrics.turbidity.flag", "X"),
     RejectReason.WRONG_TYPE, "metrics.turbidity.flag"),
    ("value as string", with_change("metrics.turbidity.value", "0.31"),
     RejectReason.WRONG_TYPE, "metrics.turbidity.value"),
    ("value as boolean", with_change("metrics.turbidity.value", True),
     RejectReason.WRONG_TYPE, "metrics.turbidity.value"),
    ("seq as string", with_change("seq", "1042"), RejectReason.WRONG_TYPE, "seq"),
    ("negative seq", with_change("seq", -1), RejectReason.WRONG_TYPE, "seq"),
    ("missing seq", with_change("seq", ...), RejectReason.MISSING_FIELD, "seq"),
    ("no metrics", with_change("metrics", {}), RejectReason.MISSING_FIELD, "metrics"),
    ("unexpected key", with_change("firmware", "1.2"), RejectReason.UNEXPECTED_FIELD, "firmware"),
    ("timestamp without offset", with_change("ts", "2026-11-22T08:00:00"),
     RejectReason.NAIVE_TIMESTAMP, "ts"),
    ("timestamp as number", with_change("ts", 1700000000), RejectReason.WRONG_TYPE, "ts"),
    ("far-future timestamp", with_change("ts", "2026-11-22T08:06:01Z"),
     RejectReason.FUTURE_TIMESTAMP, "ts"),
    ("site differs from topic", with_change("site_id", "yc-water-002"),
     RejectReason.TOPIC_MISMATCH, "site_id"),
    ("device differs from topic", with_change("device_id", "cl-02"),
     RejectReason.TOPIC_MISMATCH, "device_id"),
]


@pytest.mark.parametrize(("payload", "reason", "field"), [c[1:] for c in REJECTIONS],
                         ids=[c[0] for c in REJECTIONS])
def test_each_listed_bad_case_is_rejected_with_a_reason_naming_the_field(
    payload: bytes, reason: RejectReason, field: str
) -> None:
    result = decode_reading(TOPIC, payload, now=NOW)
    assert isinstance(result, Rejection), result
    assert (result.reason, result.field) == (reason, field)
    assert result.detail  # a sentence an operator can read


def test_five_minutes_ahead_is_still_accepted() -> None:
    payload = with_change("ts", "2026-11-22T08:06:00Z")
    assert isinstance(decode_reading(TOPIC, payload, now=NOW), Reading)


def test_device_absent_from_the_registry_is_rejected() -> None:
    payload = json.dumps(valid_payload()).encode()
    known = {("yc-water-001", "cl-01")}
    assert isinstance(decode_reading(TOPIC, payload, now=NOW, known_devices=known), Reading)
    result = decode_reading(TOPIC, payload, now=NOW, known_devices={("yc-water-001", "cl-09")})
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == (RejectReason.UNKNOWN_DEVICE, "device_id")


@pytest.mark.parametrize(
    ("topic", "field"),
    [
        ("weijian/v1/yc-water-001/cl-01/status", "topic"),
        ("weijian/v2/yc-water-001/cl-01/reading", "topic"),
        ("weijian/v1/yc-water-001/x/cl-01/reading", "topic"),
        ("weijian/v1/YC/cl-01/reading", "topic.site_id"),
        ("weijian/v1/yc-water-001/cl 01/reading", "topic.device_id"),
    ],
)
def test_bad_topics_are_rejected(topic: str, field: str) -> None:
    result = decode_reading(topic, json.dumps(valid_payload()).encode(), now=NOW)
    assert isinstance(result, Rejection)
    assert result.field == field


def test_topic_helpers_round_trip_and_refuse_bad_identifiers() -> None:
    topic = reading_topic(ROOT, "yc-pool-001", "pc-01")
    assert topic == "weijian/v1/yc-pool-001/pc-01/reading"
    assert parse_reading_topic(ROOT, topic) == ("yc-pool-001", "pc-01")
    assert status_topic(ROOT, "gw-1") == "weijian/v1/gateways/gw-1/status"
    with pytest.raises(ValueError, match=r"identifier|characters"):
        reading_topic(ROOT, "yc/pool", "pc-01")


# --- property-based ---------------------------------------------------------------------

identifiers = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    kind = draw(st.sampled_from(list(Kind)))
    names = draw(st.lists(st.sampled_from(sorted(CATALOGUE[kind])), min_size=1, unique=True))
    metrics = {}
    for name in names:
        flag = draw(st.sampled_from(list(Flag)))
        value = draw(finite if flag is Flag.NORMAL else st.none() | finite)
        metrics[name] = {"value": value, "unit": CATALOGUE[kind][name], "flag": flag}
    ts = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                           timezones=st.sampled_from([UTC, None]).map(lambda tz: tz or UTC)))
    ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)  # the wire carries milliseconds
    return Reading.model_validate({
        "site_id": draw(identifiers), "device_id": draw(identifiers),
        "gateway_id": draw(identifiers), "kind": kind, "ts": ts,
        "seq": draw(st.integers(0, 2**63 - 1)), "metrics": metrics,
    }, strict=False)


@given(readings())
@settings(max_examples=300)
def test_any_valid_reading_survives_a_json_round_trip(reading: Reading) -> None:
    topic = reading_topic(ROOT, reading.site_id, reading.device_id)
    decoded = decode_reading(topic, encode_reading(reading), now=datetime(2100, 1, 2, tzinfo=UTC))
    assert decoded == reading


NASTY = [b"", b"null", b"{}", b'{"metrics": {"ph": {}}}', b"\xc3\x28", b"\xed\xa0\x80",
         b'"\\ud800"', b"1e999", b"[" * 300, b'{"a":' * 300, b"\x00", "温度".encode("gbk")]


@given(
    st.one_of(st.binary(max_size=512), st.sampled_from(NASTY),
              readings().map(encode_reading).flatmap(
                  lambda raw: st.integers(0, len(raw)).map(lambda cut: raw[:cut]))),
    st.one_of(st.just(TOPIC), st.text(max_size=80)),
)
@example(b"[" * 100_000, TOPIC)
@settings(max_examples=500)
def test_any_bytes_and_topic_give_a_reading_or_a_rejection(payload: bytes, topic: str) -> None:
    result = decode_reading(topic, payload, now=NOW)
    assert isinstance(result, Reading | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in RejectReason
        assert result.field


def test_non_finite_values_never_pass_the_model() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match=r"finite number"):
            contract.MetricValue(value=bad, unit="pH", flag=Flag.NORMAL)


def test_public_names_match_all() -> None:
    public = {n for n in dir(contract) if not n.startswith("_") and n not in {"annotations"}}
    exported = set(contract.__all__)
    assert exported <= public
    defined_here = {n for n in public if getattr(getattr(contract, n), "__module__", None)
                    == contract.__name__ and not isinstance(getattr(contract, n), type(contract))}
    assert defined_here <= exported, defined_here - exported



def test_the_line_protocol_writes_the_contracts_tags_and_flag_fields() -> None:
    from datetime import UTC, datetime

    from ingest.lineproto import reading_line
    from weijian.contract import FLAG_FIELD_SUFFIX, READING_TAGS, Flag, Kind, MetricValue, Reading

    reading = Reading(site_id="s-1", device_id="d-1", gateway_id="gw-1", kind=Kind.COLD_CHAIN,
                      ts=datetime(2026, 1, 1, tzinfo=UTC), seq=1,
                      metrics={"temperature": MetricValue(value=None, unit="degC", flag=Flag.COMM_FAILURE)})
    head, fields, _ = reading_line(reading, "dist-1").split(" ")
    measurement, *tags = head.split(",")
    assert measurement == "cold_chain"
    assert tuple(t.split("=")[0] for t in tags) == READING_TAGS
    assert fields == f'temperature{FLAG_FIELD_SUFFIX}="B"'


def test_a_parsed_reading_is_small_and_a_metric_still_refuses_unknown_keys() -> None:
    # Ingest holds thousands of parsed readings at once (batches in flight, the verdicts the
    # two sessions of a partition share). A metric is a slotted dataclass, not a model with a
    # dict and a set of its own: a reading with three metrics held 2,835 bytes, now about 1,560.
    payload = valid_payload()
    payload["metrics"]["ph"] = {"value": 7.1, "unit": "pH", "flag": "N"}
    body = json.dumps(payload).encode()
    decode_reading(TOPIC, body, now=NOW, root=ROOT)  # the first call builds lazy caches
    tracemalloc.start()
    try:
        held = [decode_reading(TOPIC, body, now=NOW, root=ROOT) for _ in range(1000)]
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(isinstance(r, Reading) for r in held)
    assert size / len(held) < 2000, f"{size / len(held):.0f} bytes per parsed reading"
    extra = with_change("metrics.turbidity.note", "x")
    refused = decode_reading(TOPIC, extra, now=NOW, root=ROOT)
    assert isinstance(refused, Rejection) and refused.reason is RejectReason.UNEXPECTED_FIELD
    assert refused.field == "metrics.turbidity.note"
    assert refused.detail == "metrics.turbidity.note: Extra inputs are not permitted"
