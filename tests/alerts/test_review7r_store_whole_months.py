"""Review 7: only a whole calendar month's report is stored in ``report_monthly``.

The point of a district, kind and month is the month's figures (docs/reports.md, "In Grafana").
A `--from/--to` report of part of a month used to be stored at the same time (the period's
start = the month's start), overwriting the month's figures with a day's, and leaving fields it
did not define (on-time rate) from the monthly run. Real InfluxDB, real tasks database, the
report fixture's November (tests/alerts/test_report.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.alerts.test_report import write_fixture_month
from weijian.cli import main


@pytest.fixture
def setup(tmp_path: Path, influxd, influx_db) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    _, _, cfg = write_fixture_month(tmp_path, influxd.url, influx_db)
    return {"config": str(cfg), "url": influxd.url, "db": influx_db, "out": str(tmp_path / "out")}


def stored(setup: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ``report_monthly`` point, as InfluxDB holds it."""
    body = httpx.get(f"{setup['url']}/query", params={
        "db": setup["db"], "q": "SELECT * FROM report_monthly GROUP BY *", "epoch": "s"}).json()
    series = body["results"][0].get("series", [])
    return sorted(({**s["tags"], **dict(zip(s["columns"], row, strict=True))}
                   for s in series for row in s["values"]), key=lambda p: (p["district"], p["kind"]))


def report(setup: dict[str, Any], capsys: pytest.CaptureFixture[str], *period: str) -> str:
    code = main(["report", "monthly", *period, "--out", setup["out"], "--config", setup["config"]])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def test_a_days_report_does_not_touch_the_stored_month(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    err = report(setup, capsys, "--month", "2026-11")
    assert "figure points stored" in err
    month = stored(setup)
    assert month and {p["time"] for p in month} == {1793462400}  # 2026-11-01 00:00 China time
    chengguan = next(p for p in month if (p["district"], p["kind"]) == ("chengguan", "all"))
    assert chengguan["on_time_pct"] == round(100 / 3, 2) and chengguan["tasks"] == 3
    # One day of that month: the files are written, the stored month is left as it was.
    err = report(setup, capsys, "--from", "2026-11-01", "--to", "2026-11-02")
    assert stored(setup) == month
    assert "figure points stored" not in err
    assert "not stored" in err and "whole calendar month" in err
    # Two months and a half: not one calendar month either.
    err = report(setup, capsys, "--from", "2026-10-15", "--to", "2026-12-01")
    assert "not stored" in err and stored(setup) == month


def test_a_days_report_alone_stores_nothing_and_a_whole_month_by_dates_stores_the_month(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    report(setup, capsys, "--from", "2026-11-02", "--to", "2026-11-30")
    assert stored(setup) == []
    # --from/--to of exactly one calendar month is that month: the same points as --month.
    err = report(setup, capsys, "--from", "2026-11-01", "--to", "2026-12-01")
    assert "figure points stored" in err
    by_dates = stored(setup)
    httpx.post(f"{setup['url']}/query", params={"db": setup["db"], "q": "DROP MEASUREMENT report_monthly"})
    assert stored(setup) == []
    report(setup, capsys, "--month", "2026-11")
    assert stored(setup) == by_dates and {p["time"] for p in by_dates} == {1793462400}
