"""The spool on a real SQLite file: seq across reopenings, order, delete, overflow policy."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from gateway.spool import Sample, Spool
from weijian.contract import Kind, MetricValue, decode_reading


def sample(i: int) -> Sample:
    return Sample(
        "yc-cc-001", "fr-01", Kind.COLD_CHAIN, datetime(2026, 7, 15, tzinfo=UTC),
        {"temperature": MetricValue(value=float(i), unit="degC")},
    )


def open_spool(path, max_rows=1000, clock=lambda: 1000.0) -> Spool:  # type: ignore[no-untyped-def]
    return Spool(path, gateway_id="gw-test", topic_root="t/v1", max_rows=max_rows, wall_time=clock)


def test_seq_keeps_increasing_across_reopening_and_rows_come_back_oldest_first(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = open_spool(path)
    assert spool.append([sample(1), sample(2)]) == [1, 2]
    spool.close()
    spool = open_spool(path)
    assert spool.append([sample(3)]) == [3]
    rows = spool.read_after(0, 10)
    assert [r.row_id for r in rows] == sorted(r.row_id for r in rows)
    readings = [decode_reading(r.topic, r.payload, now=datetime.now(UTC), root="t/v1") for r in rows]
    assert [(r.seq, r.metrics["temperature"].value) for r in readings] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert [r.row_id for r in spool.read_after(rows[0].row_id, 10)] == [rows[1].row_id, rows[2].row_id]


def test_delete_removes_only_acknowledged_rows_and_ids_are_never_reused(tmp_path):
    spool = open_spool(tmp_path / "spool.sqlite")
    spool.append([sample(i) for i in range(5)])
    rows = spool.read_after(0, 10)
    assert spool.delete([rows[0].row_id, rows[2].row_id, 9999]) == 2
    assert spool.stats().depth == 3
    assert spool.delete([r.row_id for r in rows]) == 3
    spool.append([sample(9)])
    (new,) = spool.read_after(0, 10)
    assert new.row_id > rows[-1].row_id  # a replay cursor past old rows still sees new ones


def test_overflow_drops_the_oldest_and_counts_them_persistently(tmp_path):
    now = [1000.0]
    path = tmp_path / "spool.sqlite"
    spool = open_spool(path, max_rows=100, clock=lambda: now[0])
    spool.append([sample(i) for i in range(60)])
    now[0] = 1030.0
    spool.append([sample(i) for i in range(60, 130)])
    stats = spool.stats()
    assert (stats.depth, stats.dropped, stats.seq) == (100, 30, 130)
    assert stats.oldest_age_s == 30.0
    rows = spool.read_after(0, 1000)
    first = decode_reading(rows[0].topic, rows[0].payload, now=datetime.now(UTC), root="t/v1")
    assert first.seq == 31  # seqs 1..30 were the oldest, so they went
    spool.close()
    assert open_spool(path, max_rows=100).stats().dropped == 30


def test_overflow_spares_readings_already_in_flight(tmp_path):
    spool = open_spool(tmp_path / "spool.sqlite", max_rows=100)
    spool.append([sample(i) for i in range(100)])
    in_flight = spool.claim(10)  # the publisher hands the first 10 to the broker
    spool.append([sample(i) for i in range(100, 120)])
    rows = spool.read_after(0, 1000)
    assert [r.row_id for r in rows[:10]] == [r.row_id for r in in_flight]
    assert rows[10].row_id == in_flight[-1].row_id + 21  # seqs 11..30 were dropped instead
    assert spool.stats().dropped == 20
    # The next claim continues after what is in flight, with the oldest survivor.
    assert spool.claim(1)[0].row_id == rows[10].row_id


def test_a_claim_racing_an_overflowing_append_never_counts_a_sent_row_as_lost(tmp_path):
    # The publisher claims from one thread while the poller appends past the bound from
    # another: every row claimed must survive, and drops + survivors + claimed = appended.
    spool = open_spool(tmp_path / "spool.sqlite", max_rows=50)
    claimed: list[int] = []
    done = threading.Event()

    def publisher():
        while not done.is_set():
            claimed.extend(r.row_id for r in spool.claim(7))

    thread = threading.Thread(target=publisher)
    thread.start()
    for i in range(300):
        spool.append([sample(i), sample(i + 1000)])
    done.set()
    thread.join()
    claimed.extend(r.row_id for r in spool.claim(10_000))
    remaining = {r.row_id for r in spool.read_after(0, 10_000)}
    assert set(claimed) <= remaining  # nothing handed out was deleted
    assert spool.stats().dropped + len(remaining) == 600


def test_a_sample_that_cannot_become_a_reading_leaves_the_spool_usable(tmp_path):
    from weijian.contract import Flag

    spool = open_spool(tmp_path / "spool.sqlite", max_rows=100)
    bad = Sample("yc-cc-001", "fr-01", Kind.COLD_CHAIN, datetime(2026, 7, 15, tzinfo=UTC),
                 {"temperature": MetricValue(value=None, unit="degC", flag=Flag.NORMAL)})  # null needs a flag
    try:
        spool.append([sample(1), bad])
    except ValueError:
        pass
    else:
        raise AssertionError("a null value with flag N became a reading")
    assert spool.append([sample(2)]) == [1]  # nothing of the failed batch, and no lock left behind
    assert spool.stats().depth == 1
