"""Review 7: `--month` must be exactly YYYY-MM and `--from`/`--to` exactly YYYY-MM-DD.

Python's int() and strptime() accept more (`2026-1`, ` 2026-11`, `2026-1_1`, full-width digits,
`2026-11-1`), which then silently reported some month. Each bad form is a usage error, exit 2,
naming the option and the value (docs/reports.md). The configuration is a real one (registry,
tasks database, the session's InfluxDB with the report fixture's November), so a value that
slipped through would be reported (exit 0) or find no data (exit 1), never exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.alerts.test_report import write_fixture_month
from weijian.cli import main


@pytest.fixture
def config(tmp_path: Path, influxd, influx_db) -> Path:  # type: ignore[no-untyped-def]
    _, _, cfg = write_fixture_month(tmp_path, influxd.url, influx_db)
    return cfg


BAD_MONTHS = ["2026-1", "2026-1_1", " 2026-11", "2026-11 ", "+2026-11", "2026-011", "２０２６-11",
              "2026-11\n", "2026-13", "26-11", "2026/11"]


def test_a_month_that_is_not_yyyy_mm_is_a_usage_error_naming_option_and_value(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for value in BAD_MONTHS:
        for action in (["risk"], ["monthly", "--out", str(tmp_path / "out")]):
            code = main(["report", *action, "--month", value, "--config", str(config)])
            err = capsys.readouterr().err
            assert code == 2, (value, action, err)
            assert "--month" in err and repr(value) in err and "YYYY-MM" in err, (value, err)
    assert not (tmp_path / "out").exists()  # nothing was reported
    # The good form still works.
    assert main(["report", "risk", "--month", "2026-11", "--config", str(config)]) == 0


BAD_DAYS = [
    ("--from", "2026-11-1", "--to", "2026-12-01"),
    ("--from", "2026-11-01", "--to", "2026-12-1"),
    ("--from", "2026-1-1", "--to", "2026-12-01"),
    ("--from", " 2026-11-01", "--to", "2026-12-01"),
    ("--from", "2026-11-01", "--to", "2026-12-01 "),
    ("--from", "２０２６-11-01", "--to", "2026-12-01"),
    ("--from", "2026-11-01", "--to", "2026-12-32"),
    ("--from", "2026/11/01", "--to", "2026-12-01"),
]


def test_from_and_to_that_are_not_yyyy_mm_dd_are_usage_errors_naming_option_and_value(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for since_opt, since, until_opt, until in BAD_DAYS:
        bad_opt, bad = (since_opt, since) if since != "2026-11-01" else (until_opt, until)
        code = main(["report", "risk", since_opt, since, until_opt, until, "--config", str(config)])
        err = capsys.readouterr().err
        assert code == 2, (since, until, err)
        assert f"{bad_opt} {bad!r}" in err and "YYYY-MM-DD" in err, (since, until, err)
    assert main(["report", "risk", "--from", "2026-11-01", "--to", "2026-12-01",
                 "--config", str(config)]) == 0
