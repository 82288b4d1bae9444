"""Review 7, ``weijian tasks ...``: accounts' districts and user names checked as documented, a
silence's rule from the pack of the site's kind, task ids bounded as the API bounds them, and an
unknown task answered the same way by show, claim and close (docs/alerts.md)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.accounts import AccountError, Accounts, Role, valid_username
from alerts.store import NewTask, Store
from tests.alerts.conftest import EXAMPLE_REGISTRY
from weijian.cli import main

NOW = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
MAX_ID = 2**31 - 1


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "w.toml"
    path.write_text(f'[tasks]\nurl = "{url}"\n[registry]\npath = "{EXAMPLE_REGISTRY}"\n', encoding="utf-8")
    return path


def _task(alert_id: str) -> NewTask:
    return NewTask(alert_id=alert_id, district="xinhe", site_id="yc-water-002", device_id="wq-01",
                   rule_id="dw-turbidity-high", severity="warning", title="巡查核查：浑浊度超过限值",
                   description="实测3NTU，限值1NTU", due_at=NOW + timedelta(hours=24))


# --- accounts --------------------------------------------------------------------------------------

@pytest.mark.parametrize("district", ["Chengguan", "-x", "cheng guan", "城关", "a" * 65, "", "x\n"])
def test_user_add_refuses_a_district_that_is_not_an_identifier(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str], district: str
) -> None:
    config = _config(tmp_path, sqlite_url)
    code = main(["tasks", "user", "add", "wang", "--name", "王建国", "--district", "chengguan",
                 f"--district={district}", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("weijian: error: ") and "--district" in err
    store = Store(sqlite_url)
    try:
        assert Accounts(store.engine).get("wang") is None  # nothing added
    finally:
        store.close()


def test_accounts_refuse_a_bad_district_below_the_command_line_too(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    try:
        with pytest.raises(AccountError, match="district"):
            Accounts(store.engine).add("wang", name="王建国", phone="", team="", districts=["Bad District"],
                                       role=Role.INSPECTOR, password="correct-horse-7")
    finally:
        store.close()


@pytest.mark.parametrize("name", ["wang\n", "wang\r\n", "\nwang", "_wang", ".wang", "-wang"])
def test_a_user_name_is_exactly_the_documented_characters(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    assert not valid_username(name)
    code = main(["tasks", "user", "add", "--name", "王建国", "--district", "chengguan",
                 "--config", str(_config(tmp_path, sqlite_url)), "--", name])
    assert code == 2, capsys.readouterr().err
    store = Store(sqlite_url)
    try:
        assert Accounts(store.engine).list() == []
    finally:
        store.close()


def test_a_phone_with_a_trailing_newline_is_refused(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    try:
        with pytest.raises(AccountError, match="phone"):
            Accounts(store.engine).add("wang", name="王建国", phone="13800000000\n", team="",
                                       districts=["chengguan"], role=Role.INSPECTOR,
                                       password="correct-horse-7")
    finally:
        store.close()


def test_the_docs_say_a_user_name_starts_with_a_letter_or_digit() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text(encoding="utf-8")
    assert "User names are 1-64 characters of `a-z 0-9 _ . -`, starting with a letter or digit" in doc


# --- silences --------------------------------------------------------------------------------------

def test_a_silence_for_a_rule_of_another_kind_is_refused_naming_rule(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, sqlite_url)
    # yc-cc-001 is a cold chain store; dw-turbidity-high is a drinking-water rule.
    code = main(["tasks", "silence", "add", "--config", str(config), "--site", "yc-cc-001",
                 "--rule", "dw-turbidity-high", "--hours", "1", "--reason", "校准", "--by", "运维"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("weijian: error: ") and "--rule 'dw-turbidity-high'" in err and "cold_chain" in err
    store = Store(sqlite_url)
    try:
        assert store.silences() == []
    finally:
        store.close()
    # A rule of the site's own kind is still taken.
    assert main(["tasks", "silence", "add", "--config", str(config), "--site", "yc-cc-001",
                 "--rule", "cc-power-lost", "--hours", "1", "--reason", "校准", "--by", "运维"]) == 0


# --- task ids --------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def db_config(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    url = f"sqlite:///{tmp_path / 'tasks.sqlite'}" if request.param == "sqlite" \
        else str(request.getfixturevalue("fresh_pg_url"))
    Store(url).close()  # migrated
    return url, _config(tmp_path, url)


def _actions(task_id: str) -> list[list[str]]:
    return [["show", task_id], ["claim", task_id, "--assignee", "赵丽"],
            ["close", task_id, "--finding", "已核查", "--actor", "赵丽"]]


@pytest.mark.parametrize("task_id", [str(MAX_ID + 1), str(2**63), "0", "-1"])
def test_a_task_id_outside_1_to_2_31_is_bad_usage_naming_the_argument(
    db_config: tuple[str, Path], task_id: str
) -> None:
    _, config = db_config
    for action in _actions(task_id):
        done = subprocess.run([sys.executable, "-m", "weijian.cli", "tasks", *action,
                               "--config", str(config)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (action, done.stderr)
        assert "argument id" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_an_unknown_task_exits_1_alike_for_show_claim_and_close(
    db_config: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, config = db_config
    for task_id in ("999", str(MAX_ID)):
        for action in _actions(task_id):
            code = main(["tasks", *action, "--config", str(config)])
            err = capsys.readouterr().err
            assert code == 1, (action, err)
            assert f"no task {task_id}" in err, (action, err)
    # A known task still works, and a claimed one still answers 1 to a second claim.
    store = Store(url)
    try:
        [tid] = store.record([], [_task("r7-cli")], [], now=NOW)
    finally:
        store.close()
    assert main(["tasks", "claim", str(tid), "--assignee", "赵丽", "--config", str(config)]) == 0
    assert main(["tasks", "claim", str(tid), "--assignee", "孙海涛", "--config", str(config)]) == 1
    assert main(["tasks", "show", str(tid), "--config", str(config)]) == 0


def test_the_docs_say_what_an_unknown_task_exits_with() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text(encoding="utf-8")
    assert "no task N" in doc and "1 to 2^31-1" in doc
