"""Review 5: strict RFC 3339 timestamps, the documented check order, and docs that say so.

Pure functions (``decode_reading``); every expectation is one docs/contract.md states.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from weijian.contract import Flag, Reading, Rejection, RejectReason, decode_reading

ROOT = "weijian/v1"
TOPIC = f"{ROOT}/yc-water-001/wq-01/reading"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "site_id": "yc-water-001",
        "device_id": "wq-01",
        "gateway_id": "gw-chengguan-water",
        "kind": "drinking_water",
        "ts": "2026-11-22T07:59:00.000Z",
        "seq": 7,
        "metrics": {
            "free_chlorine": {"value": 0.42, "unit": "mg/L", "flag": "N"},
            "ph": {"value": 7.1, "unit": "pH", "flag": "N"},
        },
    }
    body.update(changes)
    return body


def _decode(body: dict[str, Any] | bytes, topic: str = TOPIC) -> Reading | Rejection:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode_reading(topic, payload, now=NOW, root=ROOT)


# --- 1. ts is RFC 3339 with an offset, nothing else ------------------------------------

@pytest.mark.parametrize(
    "ts",
    [
        "1767225600",  # epoch seconds as a string
        "1767225600000",  # epoch milliseconds
        "1767225600.5",
        "2026-11-22T07:59:00+0800",  # offset without a colon (ISO 8601 basic, not RFC 3339)
        "2026-11-22T07:59:00+08",
        "2026-11-22T07:59Z",  # no seconds
        "2026-11-22_07:59:00Z",  # '_' separator
        "2026-11-22T07:59:00,5Z",  # comma fraction
        "2026-11-22T07:59:00.Z",  # a dot without digits
        "2026-11-22",  # a date alone
        "20261122T075900Z",
        " 2026-11-22T07:59:00Z",
        "2026-11-22T07:59:00Z ",
        "2026-11-22T07:59:00 Z",
        "2026-11-22T07:59:00Z\n",
        "２０２６-11-22T07:59:00Z",  # fullwidth digits
        "2026-13-22T07:59:00Z",  # month 13
        "2026-11-22T24:00:00Z",
        "2026-02-30T07:59:00Z",
        "2026-11-22T07:60:00Z",
        "2016-12-31T23:59:60Z",  # a leap second: datetime cannot hold it
        "2026-11-22T07:59:00+24:00",
        1767225600,  # a JSON number
        None,
    ],
)
def test_a_timestamp_that_is_not_rfc3339_is_wrong_type(ts: object) -> None:
    verdict = _decode(_body(ts=ts))
    assert isinstance(verdict, Rejection), verdict
    assert (verdict.reason, verdict.field) == (RejectReason.WRONG_TYPE, "ts")
    assert "ts" in verdict.detail


@pytest.mark.parametrize(
    "ts", ["2026-11-22T07:59:00", "2026-11-22T07:59:00.123", "2026-11-22 07:59:00", "2026-11-22t07:59:00.5"]
)
def test_a_date_time_without_offset_is_naive_timestamp(ts: str) -> None:
    verdict = _decode(_body(ts=ts))
    assert isinstance(verdict, Rejection), verdict
    assert (verdict.reason, verdict.field) == (RejectReason.NAIVE_TIMESTAMP, "ts")


@pytest.mark.parametrize(
    ("ts", "utc"),
    [
        ("2026-11-22T07:59:00Z", datetime(2026, 11, 22, 7, 59, tzinfo=UTC)),
        ("2026-11-22T07:59:00.000Z", datetime(2026, 11, 22, 7, 59, tzinfo=UTC)),
        ("2026-11-22t07:59:00z", datetime(2026, 11, 22, 7, 59, tzinfo=UTC)),
        ("2026-11-22 07:59:00Z", datetime(2026, 11, 22, 7, 59, tzinfo=UTC)),
        ("2026-11-22T15:59:00+08:00", datetime(2026, 11, 22, 7, 59, tzinfo=UTC)),
        ("2026-11-22T02:29:00.5-05:30", datetime(2026, 11, 22, 7, 59, 0, 500000, tzinfo=UTC)),
        ("2026-11-22T07:59:00-00:00", datetime(2026, 11, 22, 7, 59, tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps_with_an_offset_pass_and_are_held_in_utc(ts: str, utc: datetime) -> None:
    verdict = _decode(_body(ts=ts))
    assert isinstance(verdict, Reading), verdict
    assert verdict.ts == utc
    assert verdict.ts.utcoffset() == timedelta(0)


def test_digits_below_the_microsecond_are_truncated_not_rounded() -> None:
    verdict = _decode(_body(ts="2026-11-22T07:59:00.9999999Z"))
    assert isinstance(verdict, Reading), verdict
    assert verdict.ts == datetime(2026, 11, 22, 7, 59, 0, 999999, tzinfo=UTC)
    verdict = _decode(_body(ts="2026-11-22T07:59:00.123456789Z"))
    assert isinstance(verdict, Reading), verdict
    assert verdict.ts.microsecond == 123456


# An independent oracle: RFC 3339 section 5.6 date-time with an offset (and its note's space).
_ORACLE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


@given(st.text(alphabet="0123456789-:Tt Zz+.,_/W", min_size=0, max_size=32))
@example("2026-11-22T07:59:00Z")
@example("2026-11-22T07:59:00+0800")
def test_whatever_passes_as_ts_is_rfc3339_with_an_offset(ts: str) -> None:
    verdict = _decode(_body(ts=ts))
    if isinstance(verdict, Reading):
        assert _ORACLE.fullmatch(ts), ts
    else:
        assert verdict.field == "ts"
        assert verdict.reason in (
            RejectReason.WRONG_TYPE, RejectReason.NAIVE_TIMESTAMP, RejectReason.FUTURE_TIMESTAMP
        )


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
    st.integers(0, 9),
    st.sampled_from("Tt "),
)
def test_any_rfc3339_spelling_of_an_instant_passes_truncated_to_the_microsecond(
    when: datetime, offset_min: int, digits: int, sep: str
) -> None:
    local = when.replace(tzinfo=UTC).astimezone(UTC) + timedelta(minutes=offset_min)
    sign, minutes = ("+" if offset_min >= 0 else "-"), abs(offset_min)
    fraction = f"{when.microsecond:06d}{'789'}"[:digits]
    ts = f"{local:%Y-%m-%d}{sep}{local:%H:%M:%S}" + (f".{fraction}" if digits else "")
    ts += f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    verdict = decode_reading(TOPIC, json.dumps(_body(ts=ts)).encode(), now=datetime(2101, 1, 1, tzinfo=UTC))
    assert isinstance(verdict, Reading), (ts, verdict)
    kept = int(fraction[:6].ljust(6, "0")) if digits else 0
    assert verdict.ts == when.replace(tzinfo=UTC, microsecond=kept)


# --- 3. which reason wins when a message has several faults ----------------------------

def test_future_timestamp_is_reported_before_topic_mismatch() -> None:
    ahead = (NOW + timedelta(hours=1)).isoformat()
    verdict = _decode(_body(ts=ahead, device_id="zz-99"))
    assert isinstance(verdict, Rejection)
    assert verdict.reason is RejectReason.FUTURE_TIMESTAMP


def test_fields_are_checked_in_the_documented_key_order() -> None:
    # kind comes before ts, ts before seq, seq before metrics; unknown keys after all of them.
    cases = [
        (_body(kind="bogus", seq="5"), RejectReason.UNKNOWN_KIND, "kind"),
        (_body(ts="2026-11-22T07:59:00", seq="5"), RejectReason.NAIVE_TIMESTAMP, "ts"),
        (_body(ts="1767225600", kind="bogus"), RejectReason.UNKNOWN_KIND, "kind"),
        (_body(seq=-1, metrics={}), RejectReason.WRONG_TYPE, "seq"),
        (_body(zzz=1, ts="2026-11-22T07:59:00"), RejectReason.NAIVE_TIMESTAMP, "ts"),
        (_body(zzz=1, resent="yes"), RejectReason.WRONG_TYPE, "resent"),
    ]
    for body, reason, field in cases:
        verdict = _decode(body)
        assert isinstance(verdict, Rejection), body
        assert (verdict.reason, verdict.field) == (reason, field), body


def test_field_checks_come_before_the_catalogue_checks() -> None:
    # a NaN in the second metric beats an unknown first metric and a wrong unit
    raw = json.dumps(_body(metrics={
        "bogus": {"value": 1.0, "unit": "x", "flag": "N"},
        "ph": {"value": 7.0, "unit": "pH", "flag": "N"},
    })).replace('"value": 7.0', '"value": NaN').encode()
    verdict = _decode(raw)
    assert isinstance(verdict, Rejection)
    assert (verdict.reason, verdict.field) == (RejectReason.NON_FINITE, "metrics.ph.value")


def test_catalogue_checks_go_metric_by_metric_in_payload_order() -> None:
    verdict = _decode(_body(metrics={
        "free_chlorine": {"value": 0.4, "unit": "mg/l", "flag": "N"},
        "bogus": {"value": 1.0, "unit": "x", "flag": "N"},
    }))
    assert isinstance(verdict, Rejection)
    assert (verdict.reason, verdict.field) == (RejectReason.WRONG_UNIT, "metrics.free_chlorine.unit")
    verdict = _decode(_body(metrics={
        "bogus": {"value": 1.0, "unit": "x", "flag": "N"},
        "free_chlorine": {"value": 0.4, "unit": "mg/l", "flag": "N"},
    }))
    assert isinstance(verdict, Rejection)
    assert (verdict.reason, verdict.field) == (RejectReason.UNKNOWN_METRIC, "metrics.bogus")


def test_the_docs_no_longer_claim_the_table_order_is_the_check_order() -> None:
    text = (DOCS / "contract.md").read_text()
    assert "Checks run in this order and the" not in text
    assert "several faults" in text


# --- 4. an omitted flag is N, and the docs say so --------------------------------------

def test_an_omitted_flag_is_n_as_documented() -> None:
    body = _body()
    del body["metrics"]["ph"]["flag"]
    verdict = _decode(body)
    assert isinstance(verdict, Reading)
    assert verdict.metrics["ph"].flag is Flag.NORMAL
    text = (DOCS / "contract.md").read_text()
    assert "`flag` may be omitted; it is then `N`" in text


def test_an_omitted_flag_with_a_null_value_is_null_value() -> None:
    body = _body()
    body["metrics"]["ph"] = {"value": None, "unit": "pH"}
    verdict = _decode(body)
    assert isinstance(verdict, Rejection)
    assert (verdict.reason, verdict.field) == (RejectReason.NULL_VALUE, "metrics.ph.value")


# --- 2. every reason is documented, kind_mismatch included ------------------------------

def test_every_reject_reason_has_a_row_in_the_reason_table() -> None:
    text = (DOCS / "contract.md").read_text()
    rows = set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.M))
    assert {r.value for r in RejectReason} <= rows
    assert RejectReason("kind_mismatch").value in rows


# --- 6. docs/ingest.md says what happens to sub-microsecond digits ----------------------

def test_ingest_docs_do_not_promise_exact_nanoseconds() -> None:
    text = (DOCS / "ingest.md").read_text()
    assert "exact integer nanoseconds" not in text
    assert "truncated" in text
