"""The site registry: the shipped example loads; each broken case exits 2 naming file, entry, key."""

from __future__ import annotations

import gc
import re
import tracemalloc
from pathlib import Path

import pytest

from tests.ingest.cluster import fridge_registry
from weijian.cli import main
from weijian.contract import Kind
from weijian.registry import Storage, WaterPoint, load_registry

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "registry.toml"


def test_the_example_registry_loads_with_lookups() -> None:
    registry = load_registry(EXAMPLE)
    assert {site.kind for site in registry.sites.values()} == set(Kind)
    assert len(registry.districts) == 3
    assert registry.sites["yc-water-001"].water_point is WaterPoint.FINISHED
    assert registry.sites["xh-water-001"].small_supply
    assert registry.sites["xh-cc-001"].storage is Storage.FROZEN
    assert ("yc-cc-001", "fr-02") in registry
    assert ("yc-cc-001", "fr-09") not in registry
    assert registry.gateway_of("yc-cc-001", "fr-02") == "gw-chengguan-public"
    served = [(s.id, d.id) for s, d in registry.devices_of_gateway("gw-xinhe")]
    assert served == [("xh-water-001", "wq-01"), ("xh-mw-001", "th-01"), ("xh-cc-001", "fz-01")]
    # every registered device is served by exactly one gateway in the example
    assert all(registry.gateway_of(s.id, d.id) for s, d in registry.devices())


def broken(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.count(old) >= count, old
    path = tmp_path / "registry.toml"
    path.write_text(text.replace(old, new, count), encoding="utf-8")
    return path


CASES = [
    # (case, old text, new text, expected pieces of the message after the file name)
    ("unknown district of a site",
     'district = "xinhe"\nunit = "qingshi-water"', 'district = "nanshan"\nunit = "qingshi-water"',
     [r"sites\[2\] \(id 'xh-water-001'\)", "key 'district'", "nanshan"]),
    ("unknown district of a unit",
     'district = "dongjiao"\nhandler = { name = "马丽"', 'district = "beijiao"\nhandler = { name = "马丽"',
     [r"units\[4\] \(id 'dj-hotel'\)", "key 'district'", "beijiao"]),
    ("unknown unit of a site", 'unit = "dj-chc"', 'unit = "dj-clinic"',
     [r"sites\[9\] \(id 'dj-cc-001'\)", "key 'unit'", "dj-clinic"]),
    ("duplicate site id", 'id = "dj-pool-001"', 'id = "yc-pool-001"',
     [r"sites\[4\] \(id 'yc-pool-001'\)", "key 'id'", r"duplicate of sites\[3\]"]),
    ("duplicate district id", 'id = "xinhe"', 'id = "dongjiao"',
     [r"districts\[2\] \(id 'dongjiao'\)", "key 'id'", "duplicate"]),
    ("duplicate device id in a site", '{ id = "fr-02"', '{ id = "fr-01"',
     [r"sites\[8\] \(id 'yc-cc-001'\) devices\[1\] \(id 'fr-01'\)", "key 'id'", "duplicate"]),
    ("device on two gateways", '"dj-cc-001/fr-01"]', '"dj-cc-001/fr-01", "yc-mw-001/th-01"]',
     [r"gateways\[2\] \(id 'gw-dongjiao'\)", "key 'devices'", "yc-mw-001/th-01",
      "gw-chengguan-public"]),
    ("gateway serving an unregistered device", '"xh-cc-001/fz-01"]', '"xh-cc-001/fz-09"]',
     [r"gateways\[3\] \(id 'gw-xinhe'\)", "key 'devices'", "xh-cc-001/fz-09"]),
    ("metric its kind does not have",
     '{ id = "pc-01", profile = "pool-controller", metrics = ["free_chlorine"',
     '{ id = "pc-01", profile = "pool-controller", metrics = ["weight"',
     [r"sites\[3\] \(id 'yc-pool-001'\) devices\[0\] \(id 'pc-01'\)", "key 'metrics'", "weight",
      "swimming_pool"]),
    ("bad identifier", 'id = "yc-mw-001"', 'id = "YC MW 001"',
     [r"sites\[5\] \(id 'YC MW 001'\)", "key 'id'"]),
    ("drinking water without a sampling point", 'water_point = "tap"\n', "",
     [r"sites\[1\] \(id 'yc-water-002'\)", "key 'water_point'", "required"]),
    ("cold chain without a storage mode", 'storage = "frozen"\n', "",
     [r"sites\[10\] \(id 'xh-cc-001'\)", "key 'storage'"]),
    ("misspelt key", 'licence = "宜卫水证字〔2024〕第0001号"', 'license = "宜卫水证字〔2024〕第0001号"',
     [r"units\[0\] \(id 'yc-waterworks'\)", "key 'license'", "unknown key"]),
    ("bad phone number", '"13800001081"', '"call-me"',
     [r"units\[8\] \(id 'yc-cdc'\)", "key 'handler.phone'"]),
    ("unknown kind", 'kind = "medical_waste"', 'kind = "medical_wastes"',
     [r"sites\[5\] \(id 'yc-mw-001'\)", "key 'kind'"]),
    ("unknown device profile", 'profile = "waste-store-logger"', 'profile = "waste-logger-x"',
     [r"sites\[5\] \(id 'yc-mw-001'\) devices\[0\] \(id 'th-01'\)", "key 'profile'",
      "waste-logger-x"]),
    ("profile of another kind",
     '{ id = "fz-01", profile = "fridge-logger"', '{ id = "fz-01", profile = "pool-controller"',
     [r"devices\[0\] \(id 'fz-01'\)", "key 'profile'", "swimming_pool instrument"]),
    ("metric the profile does not measure",
     '"power_ok"] },\n]\n\n[[sites]]\nid = "dj-cc-001"',
     '"power_ok", "humidity"] },\n]\n\n[[sites]]\nid = "dj-cc-001"',
     [r"devices\[1\] \(id 'fr-02'\)", "key 'metrics'", "does not measure humidity"]),
    ("not TOML", '[[gateways]]\nid = "gw-xinhe"', '[[gateways]\nid = "gw-xinhe"',
     ["not valid TOML", "line"]),
]


@pytest.mark.parametrize(("old", "new", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_broken_registry_exits_2_naming_file_entry_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: list[str]
) -> None:
    path = broken(tmp_path, old, new)
    assert main(["registry", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    for piece in expected:
        assert re.search(piece, err), f"{piece!r} not in:\n{err}"


def test_every_problem_is_listed_not_just_the_first(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = broken(tmp_path, 'unit = "dj-chc"', 'unit = "nobody"')
    text = path.read_text(encoding="utf-8").replace('unit = "xh-cdc"', 'unit = "nobody-else"')
    path.write_text(text, encoding="utf-8")
    assert main(["registry", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nobody" in err and "nobody-else" in err


def test_missing_registry_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "check", str(tmp_path / "absent.toml")]) == 2
    assert "absent.toml" in capsys.readouterr().err


def test_the_example_passes_the_cli_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "check", str(EXAMPLE)]) == 0
    assert "11 sites, 12 devices, 4 gateways" in capsys.readouterr().out


def test_a_large_registry_holds_about_1_5_kb_per_device(tmp_path: Path) -> None:
    # Every ingest process holds the whole registry: sites and devices are slotted dataclasses
    # (3,009 bytes per cold-chain device and site as pydantic models, 1,449 now).
    path = tmp_path / "registry.toml"
    fridge_registry(path, 100, 20, ("temperature", "door_open", "power_ok"))
    load_registry(path)  # the first load builds lazy caches (profiles, rule packs)
    gc.collect()
    tracemalloc.start()
    try:
        registry = load_registry(path)
        gc.collect()
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    devices = sum(1 for _ in registry.devices())
    assert devices == 2000
    assert size / devices < 2000, f"{size / devices:.0f} bytes per device"
    site = registry.sites["cc-00-00"]
    assert site.name == "冷库0-0" and registry.device("cc-00-00", "fr-01") is site.devices[0]
