"""``weijian tasks ...`` and ``weijian report ...``: a bad option value is bad usage, exit 2, with a
message naming the option, and nothing is done (the contract's exit codes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.store import NewTask, Store
from weijian.cli import main
from weijian.demo.local_services import free_port

NOW = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
EXAMPLE_REGISTRY = Path(__file__).resolve().parents[2] / "examples" / "registry.toml"


@pytest.fixture
def claimed(sqlite_url: str, tmp_path: Path) -> tuple[Store, int, Path]:
    """A claimed task in a SQLite database, and a configuration pointing at it."""
    store = Store(sqlite_url)
    [task_id] = store.record([], [NewTask(
        alert_id="cli-usage", district="xinhe", site_id="yc-water-002", device_id="wq-01",
        rule_id="dw-turbidity-high", severity="warning", title="巡查核查：浑浊度超过限值",
        description="实测3NTU，限值1NTU", due_at=NOW + timedelta(hours=24))], [], now=NOW)
    assert store.claim(task_id, "赵丽", NOW)
    config = tmp_path / "w.toml"
    config.write_text(f'[tasks]\nurl = "{sqlite_url}"\n[registry]\npath = "{EXAMPLE_REGISTRY}"\n'
                      f'[influx]\nurl = "http://127.0.0.1:{free_port()}"\ntimeout_s = 1\n', encoding="utf-8")
    return store, task_id, config


@pytest.mark.parametrize(("option", "value"), [
    ("--gps", "abc"), ("--gps", "30.1"), ("--gps", "30.1,abc"), ("--gps", "30.1,117.2,5"),
    ("--gps", "91,117.2"), ("--gps", "30.1,-181"), ("--gps", "nan,117.2"), ("--gps", "30.1,inf"),
    ("--on-site-min", "-5"), ("--on-site-min", "nan"), ("--on-site-min", "inf"),
])
def test_close_with_a_bad_value_exits_2_naming_the_option(
    claimed: tuple[Store, int, Path], capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    store, task_id, config = claimed
    code = main(["tasks", "close", str(task_id), "--finding", "已核查", "--actor", "赵丽",
                 f"{option}={value}", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("weijian: error: ") and option in err and value in err
    task = store.task(task_id)
    assert task is not None and task["status"] == "claimed"  # not closed with bad evidence


def test_close_with_good_values_still_closes(claimed: tuple[Store, int, Path]) -> None:
    store, task_id, config = claimed
    assert main(["tasks", "close", str(task_id), "--finding", "已核查", "--actor", "赵丽",
                 "--gps", " -33.9, 151.2 ", "--on-site-min", "0", "--config", str(config)]) == 0
    task = store.task(task_id)
    assert task is not None and task["status"] == "closed"
    assert task["evidence"]["gps"] == [-33.9, 151.2] and task["evidence"]["on_site_min"] == 0


@pytest.mark.parametrize("argv", [
    ["tasks", "notifications", "--limit=0"],
    ["tasks", "notifications", "--limit=-1"],
    ["tasks", "migrate", "--wait=-1"],
    ["tasks", "migrate", "--wait=nan"],
    ["report", "risk", "--month", "2026-04", "--top=0"],
    ["report", "risk", "--month", "2026-04", "--top=-3"],
])
def test_other_bad_values_exit_2_naming_the_option(
    claimed: tuple[Store, int, Path], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    _, _, config = claimed
    option, _, value = argv[-1].partition("=")
    code = main([*argv, "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("weijian: error: ") and option in err and value in err
