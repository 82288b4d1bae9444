"""Configuration: TOML plus WEIJIAN_<SECTION>__<KEY> overrides, and exit 2 on a bad file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from weijian.cli import main
from weijian.config import load_settings
from weijian.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_caller_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests set the WEIJIAN_* variables they mean; the caller's own must not leak in."""
    for name in list(os.environ):
        if name.upper().startswith("WEIJIAN_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "weijian.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_apply_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(None)
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.topic_root) == (
        "127.0.0.1", 1883, "weijian/v1")
    assert settings.influx.api == "v1"


def test_file_beats_default_and_environment_beats_file_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[mqtt]\nhost = "broker.example"\nport = 8883\n[influx]\napi = "v2"\n')
    monkeypatch.setenv("WEIJIAN_MQTT__PORT", "18830")
    settings = load_settings(path)
    assert settings.mqtt.port == 18830  # environment wins
    assert settings.mqtt.host == "broker.example"  # the rest of the section stays from the file
    assert settings.influx.api == "v2"


def test_environment_alone_can_set_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIJIAN_TASKS__URL", "postgresql://db/weijian")
    assert load_settings(None).tasks.url == "postgresql://db/weijian"


def test_relative_registry_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[registry]\npath = "sites/registry.toml"\n')
    assert load_settings(path).registry.path == tmp_path / "sites" / "registry.toml"


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("[mqtt]\nport = 70000\n", ["key 'mqtt.port'", "65535"]),
        ("[mqtt]\nprot = 1883\n", ["key 'mqtt.prot'", "unknown key"]),
        ("[mqtt\nport = 1\n", ["not valid TOML"]),
        ("[mqtt]\ntopic_root = \"a/#\"\n", ["key 'mqtt.topic_root'", "'#'"]),
        ('[influx]\napi = "v3"\n', ["key 'influx.api'", "v3"]),
        ('[tasks]\nurl = "mysql://x"\n', ["key 'tasks.url'", "sqlite:///"]),
        ("[grafna]\nurl = 1\n", ["key 'grafna'", "unknown key"]),
    ],
)
def test_bad_config_exits_2_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, pieces: list[str]
) -> None:
    path = write(tmp_path, text)
    assert main(["config", "show", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    for piece in pieces:
        assert piece in err, err


def test_bad_environment_override_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEIJIAN_MQTT__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"mqtt\.port.*WEIJIAN_MQTT__PORT"):
        load_settings(write(tmp_path, "[mqtt]\nport = 1883\n"))


def test_an_environment_variable_of_no_section_is_an_error_not_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEIJIAN_INGST__ALERTS", "false")  # misspelt [ingest]: once silently ignored
    monkeypatch.setenv("WEIJIAN_VENV", "/somewhere")  # not a setting: no "__"
    assert main(["config", "show", "--config", str(write(tmp_path, "[mqtt]\nport = 1883\n"))]) == 2
    assert "WEIJIAN_INGST__ALERTS: no section [ingst]" in capsys.readouterr().err


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_secrets_never_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[mqtt]\npassword = "hunter2"\n[sms]\nsecret = "k3y"\n')
    assert main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "k3y" not in out
    assert '"password": "***"' in out and '"secret": "***"' in out


def test_config_show_hides_credentials_inside_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, (
        '[tasks]\nurl = "postgresql://weijian:pg-s3cret@db.example:5432/weijian"\n'
        '[alerts]\nwecom_url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=wecom-robot-key"\n'
        'dingtalk_url = "https://oapi.dingtalk.com/robot/send?access_token=ding-t0ken"\n'
        '[sms]\nurl = "https://sms.example/send?access_token=sms-t0ken&sender=wj"\nsecret = "k3y"\n'
    ))
    assert main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    for secret in ("pg-s3cret", "wecom-robot-key", "ding-t0ken", "sms-t0ken"):
        assert secret not in out
    assert "postgresql://weijian:***@db.example:5432/weijian" in out  # the rest stays readable
    assert "send?key=***" in out and "access_token=***&sender=wj" in out


@pytest.mark.parametrize(("text", "secret"), [
    ('[mqtt]\npassword = 1234\n', "1234"),
    ('[mqtt]\nport = "postgresql://u:leak3d@h/db"\n', "leak3d"),
    ('[tasks]\nurl = "mysql://root:r00tpw@db/weijian"\n', "r00tpw"),
    ('[grafana]\ntoken = 99\n', "99"),
])
def test_a_config_error_shows_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, secret: str
) -> None:
    path = write(tmp_path, text)
    assert main(["config", "show", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "key '" in err  # still names the file and the key
    assert secret not in err.replace(str(path), "")


def test_registry_check_through_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], example_registry: Path
) -> None:
    path = write(tmp_path, f'[registry]\npath = "{example_registry}"\n')
    assert main(["registry", "check", "--config", str(path)]) == 0
    assert "11 sites" in capsys.readouterr().out


def test_every_relative_file_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway.spool]\npath = "spool.sqlite"\n[ingest]\nspool_path = "s.db"\n'
                           '[mqtt]\ntls_ca = "ca.pem"\n[alerts]\nrules_dir = "/etc/rules"\n')
    settings = load_settings(path)
    assert settings.gateway.spool.path == tmp_path / "spool.sqlite"
    assert settings.ingest.spool_path == tmp_path / "s.db"
    assert settings.mqtt.tls_ca == tmp_path / "ca.pem"
    assert settings.alerts.rules_dir == Path("/etc/rules")  # absolute stays as written


def test_postgres_coordination_without_a_postgresql_tasks_url_exits_2(
    tmp_path: Path, example_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write(tmp_path, f'[registry]\npath = "{example_registry}"\n[tasks]\nurl = "sqlite:///{tmp_path}/t.sqlite"\n'
                           '[ingest]\ncoordination = "postgres"\nalerts = false\nmetrics_port = 0\n')
    assert main(["ingest", "run", "--config", str(conf)]) == 2  # it claimed nothing, forever, before
    assert 'coordination = "postgres" needs [tasks] url' in capsys.readouterr().err


@pytest.mark.parametrize("program", [["sim", "list"], ["sim", "run", "--scenario", "demo-city"], ["demo"],
                                     ["sim", "hj212", "--port", "1", "--mn", "x"]])
def test_programs_without_settings_of_their_own_check_config_too(
    program: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path, "[mqtt]\nprot = 1883\n")
    assert main([*program, "--config", str(bad)]) == 2  # before anything starts
    assert "prot" in capsys.readouterr().err
