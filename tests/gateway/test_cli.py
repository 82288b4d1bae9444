"""``weijian gateway run`` refuses, with exit 2 and a message naming file and key, a device
the registry does not have or does not assign to this gateway."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import gateway_data, toml_dump
from weijian.cli import main
from weijian.demo.local_services import Broker


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ({"site_id": "yc-water-001", "device_id": "wq-09", "host": "127.0.0.1"}, "not in the site registry"),
        ({"site_id": "xh-cc-001", "device_id": "fz-01", "host": "127.0.0.1"}, "served by 'gw-other'"),
        ({"site_id": "yc-cc-001", "device_id": "fr-01", "host": "127.0.0.1", "profile": "pool-controller"},
         "differs from the registry's 'fridge-logger'"),
        ({"site_id": "yc-cc-001", "device_id": "fr-01", "transport": "rtu"}, "'serial': required"),
    ],
)
def test_gateway_refuses_devices_it_may_not_serve(tmp_path, gw_registry, capsys, device, expected):
    broker = Broker(name="unused", proc=None, workdir=tmp_path, log_file=tmp_path / "x", port=1)  # type: ignore[arg-type]
    config = tmp_path / "gateway.toml"
    config.write_text(toml_dump(gateway_data(tmp_path, broker, "t/v1", gw_registry, [device])))
    assert main(["gateway", "run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err
    assert expected in err
    assert not (tmp_path / "spool.sqlite").exists()  # refused before touching anything


def test_gateway_id_is_required(tmp_path, gw_registry, capsys):
    broker = Broker(name="unused", proc=None, workdir=tmp_path, log_file=tmp_path / "x", port=1)  # type: ignore[arg-type]
    device = {"site_id": "yc-cc-001", "device_id": "fr-01", "host": "h"}
    data = gateway_data(tmp_path, broker, "t/v1", gw_registry, [device])
    del data["gateway"]["id"]
    config = tmp_path / "gateway.toml"
    config.write_text(toml_dump(data))
    assert main(["gateway", "run", "--config", str(config)]) == 2
    assert "gateway.id" in capsys.readouterr().err


def test_the_shipped_example_configuration_is_valid_for_the_example_registry():
    from pathlib import Path

    from gateway.service import plan_devices
    from weijian.config import load_settings
    from weijian.registry import load_registry

    examples = Path(__file__).resolve().parents[2] / "examples"
    settings = load_settings(examples / "gateway.toml")  # registry.toml, beside it
    plans = plan_devices(settings, load_registry(settings.registry.path))
    assert [p.link_key for p in plans] == [
        "tcp:192.168.10.21:502:1", "tcp:192.168.10.22:502:1", "rtu:cdc-cold-store", "rtu:cdc-cold-store",
    ]
    assert plans[0].target.poll_interval_s == 30 and plans[1].target.poll_interval_s == 60


def test_a_missing_tls_ca_file_is_a_configuration_error(tmp_path, gw_registry, capsys):
    broker = Broker(name="unused", proc=None, workdir=tmp_path, log_file=tmp_path / "x", port=1)  # type: ignore[arg-type]
    device = {"site_id": "yc-cc-001", "device_id": "fr-01", "host": "127.0.0.1"}
    data = gateway_data(tmp_path, broker, "t/v1", gw_registry, [device])
    data["mqtt"]["tls_ca"] = str(tmp_path / "no-such-ca.pem")
    config = tmp_path / "gateway.toml"
    config.write_text(toml_dump(data))
    assert main(["gateway", "run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "mqtt.tls_ca" in err
