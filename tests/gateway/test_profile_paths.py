"""A profile named by path in the site registry, as an integrator writes one for an instrument
no one here shipped: found from the registry's folder whatever the working directory (systemd
runs the gateway in /var/lib/weijian), and a malformed one reported by file, key and problem."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from firmware_sim.scenario import load_scenario
from firmware_sim.service import run_scenario
from tests.gateway.conftest import device_config, gateway_data, toml_dump, write_scenario
from weijian.device_profile import _bundled_dir

SITE, DEVICE = "yc-cc-001", "fr-01"


def _site_folder(tmp_path: Path, gw_registry: Path, profile_text: str) -> Path:
    """registry.toml and profiles/cold-logger.toml in one folder; fr-01 names the profile by path."""
    folder = tmp_path / "etc"
    (folder / "profiles").mkdir(parents=True)
    (folder / "profiles" / "cold-logger.toml").write_text(profile_text, encoding="utf-8")
    text = gw_registry.read_text(encoding="utf-8").replace(
        '{ id = "fr-01", profile = "fridge-logger"',
        '{ id = "fr-01", profile = "profiles/cold-logger.toml"', 1,
    )
    (folder / "registry.toml").write_text(text, encoding="utf-8")
    return folder


def _cold_logger() -> str:
    text = (_bundled_dir() / "fridge-logger.toml").read_text(encoding="utf-8")
    return text.replace('model = "fridge-logger"', 'model = "cold-logger"')


def _weijian(*args: str, cwd: Path, **kw) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "weijian", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_registry_check_finds_a_relative_profile_from_another_working_directory(tmp_path, gw_registry):
    folder = _site_folder(tmp_path, gw_registry, _cold_logger())
    elsewhere = tmp_path / "var-lib-weijian"
    elsewhere.mkdir()
    proc = _weijian("registry", "check", str(folder / "registry.toml"), cwd=elsewhere)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_a_malformed_profile_is_reported_by_file_key_and_problem_not_as_unknown(tmp_path, gw_registry):
    bad = _cold_logger().replace("scale = 0.1", "scale = 0", 1)
    assert bad != _cold_logger()
    folder = _site_folder(tmp_path, gw_registry, bad)
    proc = _weijian("registry", "check", str(folder / "registry.toml"), cwd=tmp_path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "unknown device profile" not in err
    assert str(folder / "profiles" / "cold-logger.toml") in err
    assert "registers.temperature" in err and "scale must not be 0" in err
    assert f"(id {DEVICE!r}): key 'profile'" in err


async def test_the_gateway_run_from_another_directory_reads_a_device_with_a_relative_profile(
    tmp_path, mosquitto, topic_root, gw_registry, collector_for
):
    folder = _site_folder(tmp_path, gw_registry, _cold_logger())
    # The simulator's scenario names the profile by path too, relative to the scenario file.
    scenario = write_scenario(folder / "scenario.toml", [
        {"site_id": SITE, "device_id": DEVICE, "profile": "profiles/cold-logger.toml"},
    ])
    async with run_scenario(load_scenario(scenario), speed=0) as sim:
        data = gateway_data(tmp_path, mosquitto, topic_root, folder / "registry.toml",
                            [device_config(sim.endpoints[0])])
        config = folder / "gateway.toml"
        config.write_text(toml_dump(data), encoding="utf-8")
        elsewhere = tmp_path / "var-lib-weijian"
        elsewhere.mkdir()
        collector = collector_for(mosquitto, topic_root)
        proc = _weijian("gateway", "run", "--config", str(config), cwd=elsewhere)
        try:
            await collector.wait_for(lambda c: len(c.readings()) >= 3, 20, "three readings")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    readings = collector.readings()
    assert {(r["site_id"], r["device_id"]) for r in readings} == {(SITE, DEVICE)}
    assert all(mv["flag"] == "N" for r in readings for mv in r["metrics"].values())
