"""The functional core and the edges: line protocol, classification, dedup, the v2 writer, CLI."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest.dedup import DedupStore, SeqTracker
from ingest.influx_v2 import InfluxV2Writer
from ingest.lineproto import alert_line, reading_line
from ingest.quarantine import QuarantineStore
from ingest.validate import OUT_OF_RANGE, Quarantined, classify
from weijian.config import InfluxSettings
from weijian.contract import AlertEvent, GatewayStatus, Reading, Rejection
from weijian.errors import InfluxRejected, InfluxUnavailable
from weijian.registry import Registry

ROOT = "weijian/v1"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
TOPIC = f"{ROOT}/yc-water-001/wq-01/reading"


def _reading(**metrics: Any) -> Reading:
    return Reading.model_validate(
        {
            "site_id": "yc-water-001",
            "device_id": "wq-01",
            "gateway_id": "gw-chengguan-water",
            "kind": "drinking_water",
            "ts": "2026-11-22T08:00:00.123Z",
            "seq": 7,
            "metrics": metrics,
        },
        strict=False,
    )


def test_line_has_tags_floats_and_flags_only_when_not_normal() -> None:
    reading = _reading(
        ph={"value": 7, "unit": "pH", "flag": "N"},
        turbidity={"value": None, "unit": "NTU", "flag": "D"},
        free_chlorine={"value": 0.05, "unit": "mg/L", "flag": "M"},
    )
    line = reading_line(reading, "chengguan")
    assert line == (
        "drinking_water,device_id=wq-01,district=chengguan,gateway_id=gw-chengguan-water,"
        'site_id=yc-water-001 ph=7.0,turbidity_flag="D",free_chlorine=0.05,free_chlorine_flag="M" '
        "1795334400123000000"
    )


def test_alert_line_escapes_free_text() -> None:
    event = AlertEvent(
        alert_id="a1",
        site_id="yc-water-001",
        device_id="wq-01",
        kind="drinking_water",
        district="chengguan",
        rule="free chlorine,low",
        severity="high",
        state="firing",
        value=0.02,
        threshold=0.05,
        message='余氯 "过低"',
        ts=NOW,
    )
    assert alert_line(event) == (
        "alert,device_id=wq-01,district=chengguan,kind=drinking_water,rule=free\\ chlorine\\,low,"
        'severity=high,site_id=yc-water-001 alert_id="a1",state="firing",message="余氯 \\"过低\\"",'
        "value=0.02,threshold=0.05 1795334400000000000"
    )


def _payload(**overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "site_id": "yc-water-001",
        "device_id": "wq-01",
        "gateway_id": "gw-chengguan-water",
        "kind": "drinking_water",
        "ts": "2026-11-22T07:59:00Z",
        "seq": 1,
        "metrics": {"ph": {"value": 7.1, "unit": "pH", "flag": "N"}},
    }
    body.update(overrides)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (TOPIC, b"x" * (1024 * 1024), "too_large"),
        (TOPIC, b"[" * 40000 + b"]" * 40000, "too_large"),
        (TOPIC, b"[" * 5000 + b"]" * 5000, "malformed_json"),
        (TOPIC, _payload().replace(b"pH", b"p\xffH"), "invalid_utf8"),
        (TOPIC, _payload().replace(b"7.1", b"NaN"), "non_finite"),
        (TOPIC, _payload(seq="1"), "wrong_type"),
        (TOPIC, _payload(metrics={"urea": {"value": 1, "unit": "mg/L"}}), "unknown_metric"),
        (TOPIC, _payload(metrics={"ph": {"value": 1, "unit": "mg/L"}}), "wrong_unit"),
        (TOPIC, _payload(site_id="yc-water-002"), "topic_mismatch"),
        (TOPIC, _payload(ts="2026-11-22T08:06:00Z"), "future_timestamp"),
        (f"{ROOT}/yc-water-001/ghost/reading", _payload(device_id="ghost"), "unknown_device"),
        (TOPIC, _payload(ts="1500-01-01T00:00:00Z"), OUT_OF_RANGE),
        (
            f"{ROOT}/gateways/gw-xinhe/status",
            b'{"gateway_id": "gw-dongjiao", "state": "online", "ts": "2026-11-22T08:00:00Z"}',
            "topic_mismatch",
        ),
    ],
)
def test_hostile_messages_get_their_reason(
    topic: str, payload: bytes, reason: str, registry: Registry
) -> None:
    verdict = classify(topic, payload, root=ROOT, now=NOW, registry=registry)
    got = verdict.reason if isinstance(verdict, Rejection | Quarantined) else verdict
    assert got == reason


def test_valid_reading_and_status_pass(registry: Registry) -> None:
    assert isinstance(classify(TOPIC, _payload(), root=ROOT, now=NOW, registry=registry), Reading)
    status = b'{"gateway_id": "gw-xinhe", "state": "offline", "ts": "2026-11-22T08:00:00Z", "rssi": -70}'
    verdict = classify(f"{ROOT}/gateways/gw-xinhe/status", status, root=ROOT, now=NOW, registry=registry)
    assert isinstance(verdict, GatewayStatus)


NASTY = [
    b"\xff\xfe",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"NaN",
    b"-Infinity",
    b"1e999",
    b"null",
    b"[]",
    b"{}",
    b'"',
    b"\\u0000",
    b"\x00",
    b"{" * 50,
]


@settings(
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    deadline=None,
)
@given(
    topic=st.one_of(st.just(TOPIC), st.text(max_size=80), st.just(f"{ROOT}/gateways/gw-xinhe/status")),
    payload=st.one_of(
        st.binary(max_size=300),
        st.lists(st.one_of(st.binary(max_size=20), st.sampled_from(NASTY)), max_size=8).map(b"".join),
        st.builds(
            lambda a, b, c: a[:b] + c + a[b:],
            st.just(_payload()),
            st.integers(0, 250),
            st.sampled_from(NASTY),
        ),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.text(max_size=10),
            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    ),
)
@example(topic=TOPIC, payload=_payload().replace(b"7.1", b"1e400"))
def test_any_bytes_give_a_verdict_never_an_exception(topic: str, payload: bytes, registry: Registry) -> None:
    verdict = classify(topic, payload, root=ROOT, now=NOW, registry=registry)
    assert verdict is None or isinstance(verdict, Reading | GatewayStatus | Rejection | Quarantined)
    if isinstance(verdict, Reading):
        assert verdict.site_id == "yc-water-001"


def test_dedup_drops_repeats_counts_gaps_and_late_fills() -> None:
    tracker = SeqTracker(window=100)
    assert [tracker.admit("gw", s) for s in (1, 2, 2, 5, 1)] == [True, True, False, True, False]
    assert tracker.gateways["gw"].missing == 2  # 3 and 4
    assert tracker.admit("gw", 3) is True
    assert tracker.gateways["gw"].missing == 1
    assert tracker.admit("gw", 1000) is True
    assert tracker.admit("gw", 10) is True  # older than the window: stored again, harmlessly
    assert tracker.too_old == 1


async def test_dedup_survives_a_restart(tmp_path: Path) -> None:
    store = DedupStore(tmp_path / "d.sqlite", window=100)
    tracker = await store.load()
    admitted = [("gw", s) for s in (1, 2, 4) if tracker.admit("gw", s)]
    await store.save(admitted, tracker)
    store.close()
    again = DedupStore(tmp_path / "d.sqlite", window=100)
    reloaded = await again.load()
    assert reloaded.admit("gw", 2) is False
    assert reloaded.admit("gw", 3) is True
    assert reloaded.gateways["gw"].missing == 0
    again.close()


class _V2Handler(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []  # noqa: RUF012
    status = 204

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        type(self).received.append((self.path, dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()
        if type(self).status != 204:
            self.wfile.write(b'{"code":"invalid","message":"bad line"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def v2_server() -> Iterator[tuple[str, type[_V2Handler]]]:
    handler = type("H", (_V2Handler,), {"received": [], "status": 204})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()


async def test_v2_writer_speaks_the_documented_write_api(v2_server: tuple[str, type[_V2Handler]]) -> None:
    url, handler = v2_server
    writer = InfluxV2Writer(InfluxSettings(api="v2", url=url, org="yc-org", bucket="weijian", token="s3cret"))
    body = reading_line(_reading(ph={"value": 7.2, "unit": "pH"}), "chengguan").encode()
    await writer.write(body)
    path, headers, got = handler.received[0]
    assert path.startswith("/api/v2/write?")
    query = dict(p.split("=", 1) for p in path.split("?", 1)[1].split("&"))
    assert query == {"org": "yc-org", "bucket": "weijian", "precision": "ns"}
    assert headers["Authorization"] == "Token s3cret"
    assert got == body
    handler.status = 400
    with pytest.raises(InfluxRejected):
        await writer.write(body)
    handler.status = 503
    with pytest.raises(InfluxUnavailable):
        await writer.write(body)
    await writer.aclose()


async def test_quarantine_cli_lists_and_filters(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q.sqlite")
    await store.add(
        [
            Quarantined(TOPIC, b"\xff junk", "invalid_utf8", "payload", "not UTF-8"),
            Quarantined(TOPIC, b"{}", "missing_field", "site_id", "site_id: Field required"),
        ],
        NOW,
    )
    store.close()
    conf = tmp_path / "ingest.toml"
    conf.write_text(f'[ingest]\nquarantine_path = "{tmp_path / "q.sqlite"}"\n')
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "weijian.cli",
            "ingest",
            "quarantine",
            "--config",
            str(conf),
            "--reason",
            "invalid_utf8",
            "--limit",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = done.stdout
    assert "invalid_utf8=1" in out and "missing_field=1" in out
    lines = out.strip().splitlines()[1:]
    assert len(lines) == 1 and "\tinvalid_utf8\tpayload\t" in lines[0]


def test_ts_in_line_is_exact_nanoseconds() -> None:
    reading = _reading(ph={"value": 7, "unit": "pH"})
    ts_ns = int(reading_line(reading, "d").rsplit(" ", 1)[1])
    assert ts_ns == int(datetime(2026, 11, 22, 8, 0, 0, 123000, tzinfo=UTC).timestamp() * 1000) * 1_000_000
    assert reading.ts + timedelta(0) == datetime.fromtimestamp(ts_ns / 1e9, UTC)


def test_the_verdict_cache_parses_each_message_once_for_both_sessions(registry: Registry) -> None:
    from ingest.validate import Incoming, VerdictCache

    cache = VerdictCache(size=2)
    message = Incoming(TOPIC, _payload(), 1, 1)
    first = cache.verdict(message, root=ROOT, now=NOW, registry=registry, side="storage")
    other_copy = Incoming(TOPIC, bytes(bytearray(message.payload)), 7, 1)  # the other session's
    assert cache.verdict(other_copy, root=ROOT, now=NOW, registry=registry, side="alerts") is first
    assert (cache.hits, cache.misses) == (1, 1)  # not parsed again
    third = cache.verdict(message, root=ROOT, now=NOW, registry=registry)
    assert third is not first and third == first  # taken once: a later copy is parsed again
    for i in range(5):  # bounded: the oldest entries go
        cache.verdict(Incoming(f"{ROOT}/yc-water-001/wq-0{i}/reading", b"{}", i, 1), root=ROOT, now=NOW,
                      registry=registry)
    assert len(cache._verdicts) <= 2


async def test_the_session_ahead_waits_for_the_other_only_while_the_other_is_live(
    registry: Registry,
) -> None:
    """In a drain the session ahead waits for the other, so its parses are taken, not evicted."""
    import asyncio

    from ingest.validate import Incoming, VerdictCache

    def message(i: int) -> Incoming:
        return Incoming(f"{ROOT}/yc-water-001/wq-0{i}/reading", b"{}", i, 1)

    def classify(cache: VerdictCache, i: int, side: str) -> None:
        cache.verdict(message(i), root=ROOT, now=NOW, registry=registry, side=side)

    cache = VerdictCache(size=2, wait_s=30)
    await cache.room_for("storage", 2, partner_live=True)  # room: no wait
    classify(cache, 0, "storage")
    classify(cache, 1, "storage")
    await asyncio.wait_for(cache.room_for("storage", 2, partner_live=False), 5)  # not live: no wait
    leader = asyncio.ensure_future(cache.room_for("storage", 2, partner_live=True))  # 2 ahead
    await asyncio.sleep(0.05)
    assert not leader.done()
    classify(cache, 0, "alerts")  # takes storage's parse: one behind now
    await asyncio.sleep(0.05)
    assert not leader.done()
    classify(cache, 1, "alerts")  # level: two more fit
    await asyncio.wait_for(leader, 5)
    assert (cache.misses, cache.hits) == (2, 2)

    # The session behind never waits for the one ahead.
    behind = VerdictCache(size=2, wait_s=30)
    for i in range(5):
        classify(behind, i, "alerts")
    await asyncio.wait_for(behind.room_for("storage", 2, partner_live=True), 5)


class _SetTracker:
    """The dedup rule spelt out with a set of every seq seen: what SeqTracker must decide."""

    def __init__(self, window: int) -> None:
        self.window, self.seen, self.top, self.missing = window, set[int](), -1, 0

    def admit(self, seq: int) -> bool:
        if seq > self.top:
            if self.top >= 0:
                self.missing += seq - self.top - 1
            self.top = seq
        elif seq <= self.top - self.window:
            return True
        elif seq in self.seen:
            return False
        else:
            self.missing = max(0, self.missing - 1)
        self.seen.add(seq)
        return True


@given(st.lists(st.one_of(st.integers(0, 30), st.integers(0, 400), st.integers(0, 2**63 - 1)), max_size=300),
       st.integers(1, 50), st.integers(1, 40))
@example([0, 2, 1, 1], 10, 1)  # a hole filled, then the same seq again
@settings(max_examples=300, deadline=None)
def test_dedup_decides_as_a_set_of_every_seq_would_with_memory_for_the_holes_only(
    seqs: list[int], window: int, prune_every: int
) -> None:
    tracker, model = SeqTracker(window), _SetTracker(window)
    for i, seq in enumerate(seqs):
        assert tracker.admit("gw", seq) == model.admit(seq), (i, seq)
        assert tracker.gateways["gw"].missing == model.missing
        if i % prune_every == 0:
            tracker.prune()
            state = tracker.gateways["gw"]
            assert len(state.holes) + len(state.early) <= window  # bounded by the window, not the stream


async def test_dedup_reloads_holes_and_what_it_saw_from_the_blocks(tmp_path: Path) -> None:
    store = DedupStore(tmp_path / "d.sqlite", window=1000)
    tracker = await store.load()
    seqs = [5, 6, 7, 10, 11, 3]  # 8 and 9 missing; 3 came late, below the first one
    await store.save([("gw", s) for s in seqs if tracker.admit("gw", s)], tracker)
    store.close()
    again = DedupStore(tmp_path / "d.sqlite", window=1000)
    reloaded = await again.load()
    again.close()
    assert [reloaded.admit("gw", s) for s in (3, 5, 7, 10, 11)] == [False] * 5
    assert [reloaded.admit("gw", s) for s in (8, 9, 4, 12)] == [True] * 4
    assert reloaded.gateways["gw"].missing == 0
