"""Configuration the alert stage cannot work with is refused at load: a webhook without its HMAC
key (an empty key lets anyone forge one), durations that are not positive."""

from __future__ import annotations

from pathlib import Path

import pytest

from weijian.cli import main


@pytest.mark.parametrize("secret", [None, ""])
def test_a_webhook_url_without_a_secret_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secret: str | None
) -> None:
    conf = tmp_path / "weijian.toml"
    text = '[sms]\nurl = "http://127.0.0.1:8025/sms"\n'
    if secret is not None:
        text += f'secret = "{secret}"\n'
    conf.write_text(text)
    assert main(["config", "show", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert str(conf) in err and "'sms'" in err and "'secret'" in err


def test_a_webhook_url_with_a_secret_loads(tmp_path: Path) -> None:
    conf = tmp_path / "weijian.toml"
    conf.write_text('[sms]\nurl = "http://127.0.0.1:8025/sms"\nsecret = "k3y"\n')
    assert main(["config", "show", "--config", str(conf)]) == 0


@pytest.mark.parametrize(("line", "key"), [
    ("sla_h = {critical = -1}", "alerts.sla_h.critical"),
    ("escalate_after_min = [0, 60]", "alerts.escalate_after_min.0"),
])
def test_alert_durations_must_be_positive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, key: str
) -> None:
    conf = tmp_path / "weijian.toml"
    conf.write_text(f"[alerts]\n{line}\n")
    assert main(["config", "show", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert f"key '{key}'" in err and "got " in err
