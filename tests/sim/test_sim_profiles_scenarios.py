"""Device profiles and scenario files: what ships loads, what is wrong is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.scenario import ScenarioError, Transport, list_scenarios, load_scenario
from weijian.contract import CATALOGUE, Kind
from weijian.device_profile import (
    DataType,
    ProfileError,
    Table,
    list_profiles,
    load_profile,
    plan_reads,
)
from weijian.errors import UsageError
from weijian.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
REGISTRY_NAMES = {"wq-analyser", "pool-controller", "waste-store-logger", "fridge-logger"}


def test_bundled_profiles_cover_every_kind_with_the_registry_names():
    names = set(list_profiles())
    assert names >= REGISTRY_NAMES
    kinds = {load_profile(n).kind for n in names}
    assert kinds == set(Kind)
    registry = load_registry(ROOT / "examples" / "registry.toml")
    for _site, device in ((s, d) for s in registry.sites.values() for d in s.devices):
        profile = load_profile(device.profile)
        assert set(device.metrics) <= set(profile.registers)


def test_profiles_use_every_data_type_and_both_word_orders():
    specs = [s for n in list_profiles() for s in load_profile(n).registers.values()]
    assert {s.type for s in specs} == set(DataType)
    assert {s.word_order for s in specs if s.width == 2} == {"ABCD", "CDAB"}
    assert {s.table for s in specs} == set(Table)
    for name in list_profiles():
        profile = load_profile(name)
        for metric, spec in profile.registers.items():
            assert spec.unit == CATALOGUE[profile.kind][metric]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
model = "{name}"
vendor = "x"
kind = "cold_chain"
[registers.temperature]
table = "input"
address = 0
type = "int16"
scale = 0.1
unit = "{unit}"
"""


def test_profile_errors_name_file_and_key(tmp_path: Path):
    ok = load_profile(write(tmp_path, "ok", GOOD.format(name="ok", unit="degC")))
    assert ok.registers["temperature"].scale == 0.1
    path = write(tmp_path, "bad", GOOD.format(name="bad", unit="K"))
    with pytest.raises(ProfileError, match=r"bad\.toml.*registers\.temperature\.unit.*degC"):
        load_profile(path)
    path = write(tmp_path, "extra", GOOD.format(name="extra", unit="degC") + "colour = 1\n")
    with pytest.raises(ProfileError, match=r"extra\.toml: key 'registers\.temperature\.colour': unknown key"):
        load_profile(path)
    overlap = GOOD.format(name="ov", unit="degC") + (
        '[registers.humidity]\ntable = "input"\naddress = 0\ntype = "uint16"\nunit = "%RH"\n'
    )
    with pytest.raises(ProfileError, match="address 0 is already used"):
        load_profile(write(tmp_path, "ov", overlap))
    bit = GOOD.format(name="bit", unit="degC").replace('table = "input"', 'table = "coil"')
    with pytest.raises(ProfileError, match="type must be 'bit'"):
        load_profile(write(tmp_path, "bit", bit))
    with pytest.raises(ProfileError, match="no such bundled profile"):
        load_profile("no-such-model")
    with pytest.raises(ProfileError, match="must equal the file name"):
        load_profile(write(tmp_path, "renamed", GOOD.format(name="other", unit="degC")))
    assert issubclass(ProfileError, UsageError)


def test_plan_reads_merges_adjacent_registers_only():
    pool = load_profile("pool-controller")
    blocks = plan_reads(pool.fields())
    assert [(b.table, b.start, b.count) for b in blocks] == [
        (Table.HOLDING, 0, 7),
        (Table.HOLDING, 8, 2),
        (Table.HOLDING, 20, 1),
        (Table.HOLDING, 40, 2),
    ]
    assert [(b.start, b.count) for b in plan_reads(pool.fields(), max_gap=1)][:1] == [(0, 10)]


fields_strategy = st.lists(
    st.tuples(st.sampled_from(list(Table)), st.integers(0, 400), st.sampled_from([1, 2])),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(items=fields_strategy, gap=st.integers(0, 5), limit=st.integers(2, 20))
def test_plan_reads_covers_each_item_once_within_limits(items, gap, limit):
    named = [(f"f{i}", table, address, width) for i, (table, address, width) in enumerate(items)]
    blocks = plan_reads(named, max_gap=gap, max_registers=limit, max_bits=limit)
    placed = [name for b in blocks for name in b.names]
    assert sorted(placed) == sorted(n for n, *_ in named)
    by_name = {n: (t, a, w) for n, t, a, w in named}
    for b in blocks:
        assert 1 <= b.count <= limit
        for name in b.names:
            table, address, width = by_name[name]
            assert table is b.table and b.start <= address and address + width <= b.start + b.count
    if gap == 0:  # no block spans an address no item maps
        for b in blocks:
            covered = set()
            for name in b.names:
                _, address, width = by_name[name]
                covered |= set(range(address, address + width))
            assert covered == set(range(b.start, b.start + b.count))


def test_bundled_scenarios_load_and_match_the_example_registry():
    names = set(list_scenarios())
    assert {
        "normal-day",
        "cold-chain-mains-failure",
        "pool-chlorine-low",
        "water-turbidity-spike",
        "waste-not-collected",
        "device-silent",
    } <= names
    registry = load_registry(ROOT / "examples" / "registry.toml")
    known = {(s.id, d.id): (s.kind, d.profile) for s in registry.sites.values() for d in s.devices}
    for name in names:
        scenario = load_scenario(name)
        for entry in scenario.devices:
            kind, _ = known[(entry.site_id, entry.device_id)]
            assert scenario.profiles[entry.key].kind is kind, (name, entry.key)
    normal = load_scenario("normal-day")
    assert {(d.site_id, d.device_id) for d in normal.devices} == set(known)
    assert {load_scenario("normal-day").profiles[k].kind for k in normal.profiles} == set(Kind)
    assert any(d.transport is Transport.RTU for d in normal.devices)


BASE = """
name = "t"
start = 2026-01-01T00:00:00+08:00
[[devices]]
site_id = "yc-cc-001"
device_id = "fr-01"
profile = "fridge-logger"
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("speed = -1\n", r"key 'speed'"),
        ("params = { low_cc = 1.0 }\n", r"devices\[0\]\.params\.low_cc': not a parameter"),
        ("params = { door_openings_per_day = 1.5 }\n", r"door_openings_per_day': must be a whole"),
        ('transport = "rtu"\n', r"devices\[0\]\.line': an rtu device needs"),
        ('profile2 = "x"\n', r"devices\.0\.profile2': unknown key"),
        (
            '[[events]]\ndevice = "yc-cc-001/fr-09"\nkind = "silent"\nat_h = 1\n',
            r"events\[0\]\.device': no device",
        ),
        (
            '[[events]]\ndevice = "yc-cc-001/fr-01"\nkind = "dosing_failure"\nat_h = 1\n',
            r"events\[0\]\.kind': dosing_failure does not happen to a cold_chain",
        ),
        (
            '[[events]]\ndevice = "yc-cc-001/fr-01"\nkind = "slow"\nat_h = 1\n',
            r"events\[0\]\.params\.delay_s': required",
        ),
        ('[[events]]\ndevice = "yc-cc-001/fr-01"\nkind = "garbled"\nat_h = 1\n', r"serial-line fault"),
        (
            '[[events]]\ndevice = "yc-cc-001/fr-01"\nkind = "stuck"\nmetric = "ph"\nat_h = 1\n',
            r"fridge-logger has no metric 'ph'",
        ),
    ],
)
def test_scenario_errors_name_file_and_key(tmp_path: Path, extra: str, message: str):
    text = BASE + extra if not extra.startswith("speed") else extra + BASE
    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError, match=message) as info:
        load_scenario(path)
    assert str(path) in str(info.value)


def test_scenario_unreadable_and_unknown(tmp_path: Path):
    with pytest.raises(ScenarioError, match="no such bundled scenario"):
        load_scenario("nope")
    path = tmp_path / "broken.toml"
    path.write_text("name = ", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"broken\.toml"):
        load_scenario(path)


def test_a_scenario_moved_to_another_day_keeps_its_events_in_place():
    from datetime import datetime, timedelta

    scenario = load_scenario("demo-city")
    moved = scenario.starting_at(scenario.start + timedelta(days=130))
    assert moved.start == scenario.start + timedelta(days=130)
    for key, events in scenario.events.items():
        for old, new in zip(events, moved.events[key], strict=True):
            assert new.start_s - moved.start_s == old.start_s - scenario.start_s
            assert new.end_s - new.start_s == old.end_s - old.start_s
    fridge = moved.events["yc-cc-001/fr-01"][0]
    assert datetime.fromtimestamp(fridge.start_s, moved.start.tzinfo).hour == 2
