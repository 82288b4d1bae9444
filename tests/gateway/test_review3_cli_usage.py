"""What docs/gateway.md and docs/hj212.md promise about bad usage, checked as an operator meets it:
the real `weijian` program, exit 2 and a message naming what is wrong, before anything is sent."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.e2e.conftest import dump_toml
from tests.gateway.conftest import GATEWAY_ID, ROOT, toml_dump
from weijian.registry import load_registry

MN = "010000A8900016F000169DC0"


def weijian(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weijian", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def hj212_registry(path: Path) -> Path:
    """examples/registry.toml's districts and units, one water station read by an HJ 212 logger."""
    data = tomllib.loads((ROOT / "examples" / "registry.toml").read_text(encoding="utf-8"))
    site = next(s for s in data["sites"] if s["kind"] == "drinking_water")
    device = {"id": "wq-01", "profile": "wq-hj212-logger", "metrics": ["ph", "turbidity"]}
    data["sites"] = [site | {"id": "hj-water-000", "name": "数采仪水站", "devices": [device]}]
    data["gateways"] = [{"id": GATEWAY_ID, "name": "测试网关", "devices": ["hj-water-000/wq-01"]}]
    path.write_text(dump_toml(data), encoding="utf-8")
    load_registry(path)
    return path


@pytest.fixture
def hj_config(tmp_path: Path) -> Path:
    """A gateway configuration with one HJ 212 logger; no gateway is running."""
    registry = hj212_registry(tmp_path / "registry.toml")
    config = tmp_path / "gateway.toml"
    config.write_text(toml_dump({
        "registry": {"path": str(registry)},
        "gateway": {"id": GATEWAY_ID, "spool": {"path": str(tmp_path / "spool.sqlite")},
                    "hj212": {"listen_port": 0, "loggers": [
                        {"mn": MN, "password": "123456", "site_id": "hj-water-000", "device_id": "wq-01"}]}},
    }), encoding="utf-8")
    return config


@pytest.mark.parametrize("when", ["20261301000000", "20261232000000", "20261203250000", "00000000000000"])
def test_set_clock_to_a_time_that_does_not_exist_is_bad_usage(hj_config, tmp_path, when):
    # docs/hj212.md: exit 2 for "a value that is not a number or a time".
    done = weijian("gateway", "hj212", "send", "--config", str(hj_config), MN, "set-clock", when,
                   cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "SystemTime" in done.stderr and when in done.stderr
    assert "no running gateway" not in done.stderr  # refused before the socket was tried


@pytest.mark.parametrize(
    "field", ["Foo=a;b", "Foo=ab\n", "Foo=a,b", "Foo=a=b", "Foo=a&b", "Foo=a\nb", "F;o=1", "9x=1"])
def test_a_raw_cp_field_the_cp_cannot_carry_is_bad_usage(hj_config, tmp_path, field):
    # docs/hj212.md: `CN NAME=VALUE ...`: "no ; , = & or line breaks in values"; a value that
    # would inject CP fields is the operator's mistake (exit 2), not a failure of the logger (1).
    done = weijian("gateway", "hj212", "send", "--config", str(hj_config), MN, "1072", field, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "no running gateway" not in done.stderr


def test_a_good_time_and_a_good_cp_field_get_as_far_as_the_socket(hj_config, tmp_path):
    # The counterpart: valid usage is not refused; with no gateway running it is exit 1.
    for args in (("set-clock", "20261203180501"), ("1072", "Foo=bar-1.5")):
        done = weijian("gateway", "hj212", "send", "--config", str(hj_config), MN, *args, cwd=tmp_path)
        assert done.returncode == 1 and "no running gateway answers" in done.stderr, done.stderr


def test_a_modbus_device_whose_profile_has_no_registers_is_a_configuration_error(tmp_path):
    # docs/gateway.md: exit 2 for a bad configuration, the message naming the file and the key.
    # A device read through an HJ 212 logger (a profile with [hj212.factors] only) configured
    # as a Modbus device has nothing to poll: that is the configuration's fault, not a crash.
    registry = hj212_registry(tmp_path / "registry.toml")
    config = tmp_path / "gateway.toml"
    config.write_text(toml_dump({
        "registry": {"path": str(registry)},
        "gateway": {"id": GATEWAY_ID, "spool": {"path": str(tmp_path / "spool.sqlite")},
                    "metrics_port": 0,
                    "devices": [{"site_id": "hj-water-000", "device_id": "wq-01", "host": "127.0.0.1"}]},
    }), encoding="utf-8")
    done = weijian("gateway", "run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert str(config) in done.stderr and "gateway.devices[0]" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "spool.sqlite").exists()  # refused before anything started


def test_two_upstreams_with_one_name_are_a_configuration_error(hj_config, tmp_path):
    # docs/hj212.md: `name` "names the queue file" (<spool file>.hj212-<name>.sqlite): two
    # upstreams of one name would share a queue, each packet reaching only one of them.
    text = hj_config.read_text(encoding="utf-8")
    for host_port in (9301, 9302):
        text += (f'[[gateway.hj212.upstreams]]\nname = "province"\nhost = "127.0.0.1"\n'
                 f"port = {host_port}\n")
    text = text.replace("[gateway]\n", "[gateway]\nmetrics_port = 0\n", 1)
    hj_config.write_text(text, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "weijian", "gateway", "run", "--config", str(hj_config)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=8)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.communicate(timeout=20)
        pytest.fail("the gateway started with two upstreams sharing one queue")
    assert proc.returncode == 2, err[-2000:]
    assert str(hj_config) in err and "gateway.hj212.upstreams[1].name" in err


def test_a_relative_control_socket_in_the_file_is_relative_to_the_file(tmp_path: Path) -> None:
    # An operator runs `weijian gateway hj212` from another directory than systemd runs the
    # gateway from: both must find the same socket.
    from weijian.config import load_settings

    conf = tmp_path / "etc" / "gw.toml"
    conf.parent.mkdir()
    conf.write_text('[gateway]\nid = "gw-a"\n[gateway.hj212]\ncontrol_socket = "run/gw.sock"\n')
    settings = load_settings(conf)
    assert settings.gateway.hj212.control_socket == conf.parent / "run" / "gw.sock"
