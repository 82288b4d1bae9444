"""Site overrides in the registry (validated against the rule packs) and restarts that
neither fire twice nor forget an open alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.engine import TransitionKind
from alerts.service import AlertService
from tests.alerts.conftest import EXAMPLE_REGISTRY, make_settings
from weijian.contract import Kind, MetricValue, Reading
from weijian.errors import RegistryError
from weijian.registry import load_registry
from weijian.rules import default_rule_packs, rules_for_site

POOL_SITE = '[[sites]]\nid = "yc-pool-001"'


def _with_override(tmp_path: Path, table: str) -> Path:
    text = EXAMPLE_REGISTRY.read_text(encoding="utf-8")
    block = text[text.index(POOL_SITE):]
    end = block.index("devices = [")
    patched = text.replace(block[:end], block[:end] + table + "\n", 1)
    path = tmp_path / "registry.toml"
    path.write_text(patched, encoding="utf-8")
    return path


def test_override_is_applied_to_the_site_rules(tmp_path: Path) -> None:
    reg = load_registry(_with_override(
        tmp_path, 'overrides = { sp-free-chlorine-low = { min = 0.5, clear_min = 0.55 }, '
                  'sp-temperature-range = { enabled = true, min = 26.0, max = 28.0, '
                  'clear_min = 26.5, clear_max = 27.5 } }'))
    site = reg.sites["yc-pool-001"]
    got = {r.id: r for r in rules_for_site(site, default_rule_packs(), site.overrides)}
    assert got["sp-free-chlorine-low"].min == 0.5
    assert got["sp-temperature-range"].max == 28.0  # a disabled C rule enabled by the site
    other = reg.sites["dj-pool-001"]
    assert "sp-temperature-range" not in {r.id for r in rules_for_site(other, default_rule_packs())}


@pytest.mark.parametrize(("table", "message"), [
    ('overrides = { no-such-rule = { max = 1.0 } }', "key 'overrides.no-such-rule': no such rule"),
    ('overrides = { sp-free-chlorine-low = { mni = 0.5 } }',
     "key 'overrides.sp-free-chlorine-low.mni': not an overridable parameter"),
    ('overrides = { sp-free-chlorine-low = { min = "low" } }',
     "key 'overrides.sp-free-chlorine-low.min': must be a number"),
    ('overrides = { sp-free-chlorine-low = { clear_min = 0.1 } }', "clear_min"),
])
def test_bad_override_names_file_entry_and_key(tmp_path: Path, table: str, message: str) -> None:
    path = _with_override(tmp_path, table)
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    text = str(err.value)
    assert str(path) in text and "sites[3] (id 'yc-pool-001')" in text and message in text, text


def _reading(minute: int, turbidity: float) -> Reading:
    return Reading(site_id="yc-water-002", device_id="wq-01", gateway_id="gw-chengguan-water",
                   kind=Kind.DRINKING_WATER, ts=datetime(2026, 5, 12, tzinfo=UTC) + timedelta(minutes=minute),
                   seq=minute + 1, metrics={"turbidity": MetricValue(value=turbidity, unit="NTU")})


async def test_restart_neither_fires_twice_nor_forgets(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, "http://127.0.0.1:9/sms")
    registry = load_registry(EXAMPLE_REGISTRY)
    clock = {"m": 0}

    def now() -> datetime:
        return datetime(2026, 5, 12, tzinfo=UTC) + timedelta(minutes=clock["m"])

    first = AlertService.from_settings(settings, registry, now=now)
    seen = []
    for m in range(8):
        clock["m"] = m
        seen += await first.handle(_reading(m, 2.5))
    [fired] = [t for t in seen if t.kind is TransitionKind.FIRING]
    first.close()

    second = AlertService.from_settings(settings, registry, now=now)  # the restart
    after = []
    for m in range(8, 20):
        clock["m"] = m
        after += await second.handle(_reading(m, 2.5))
    assert [t for t in after if t.kind in (TransitionKind.FIRING, TransitionKind.PENDING)] == []
    clock["m"] = 20
    [res] = await second.handle(_reading(20, 0.2))
    assert res.kind is TransitionKind.RESOLVED and res.alert.alert_id == fired.alert.alert_id
    assert len(second.store.tasks()) == 1
    second.close()


async def test_a_database_outage_delays_the_record_but_loses_nothing(tmp_path: Path) -> None:
    # Another connection holds SQLite's write lock: recording the new alert fails until it
    # lets go. The service retries; the alert is then stored, once.
    import asyncio
    import sqlite3

    path = tmp_path / "alerts.sqlite"
    settings = make_settings(f"sqlite:///{path}", "http://127.0.0.1:9/sms", db_timeout_s=0.2)
    registry = load_registry(EXAMPLE_REGISTRY)
    now = datetime(2026, 5, 12, 0, 30, tzinfo=UTC)
    service = AlertService.from_settings(settings, registry, now=lambda: now)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        pending = asyncio.create_task(service.handle(_reading(0, 2.5)))
        await asyncio.sleep(1.5)  # several failed attempts
        assert not pending.done()
        blocker.execute("COMMIT")
        transitions = await asyncio.wait_for(pending, 10)
        assert [t.kind for t in transitions] == [TransitionKind.PENDING]
        assert [a.alert_id for a in service.store.open_alerts()] == [transitions[0].alert.alert_id]
    finally:
        blocker.close()
        service.close()
