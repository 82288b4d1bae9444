"""Review 7: "completeness by day" counts each device's own first metric (its registry
``metrics[0]``), as docs/reports.md says, not the kind's alphabetically first metric.

Three drinking-water devices, one China day (1 Nov 2026), hourly (``interval_s = 3600``: 24
readings expected each), in a real InfluxDB:

- chengguan, ``dc-full/wq-01``, metrics free_chlorine, turbidity, ph, temperature, conductivity:
  conductivity (the kind's alphabetically first metric) all 24 hours, free_chlorine (its first)
  only 20 of them -> 20 of 24 that day;
- xinhe, ``dc-cl/cl-01``, metrics free_chlorine, ph: never conductivity -> 24 of 24 (it used to
  count 0);
- xinhe, ``dc-cl/tb-01`` (same site), metrics turbidity, free_chlorine: turbidity 24 hours,
  free_chlorine 12 -> 24 of 24, and neither the free_chlorine of its neighbour cl-01 nor its own
  12 are added to it.
"""

from __future__ import annotations

import tomllib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from alerts.report import tables
from alerts.statistics import compute_report, days_period, month_period
from alerts.store import Store
from tests.e2e.conftest import dump_toml
from weijian.config import InfluxSettings
from weijian.registry import Registry, load_registry
from weijian.rules import default_rule_packs

ROOT = Path(__file__).resolve().parents[2]
CHINA = timezone(timedelta(hours=8))
DAY = datetime(2026, 11, 1, tzinfo=CHINA)
FULL = ["free_chlorine", "turbidity", "ph", "temperature", "conductivity"]


def make_registry(path: Path) -> Path:
    data = tomllib.loads((ROOT / "examples" / "registry.toml").read_text(encoding="utf-8"))
    base = next(s for s in data["sites"] if s["kind"] == "drinking_water")

    def device(did: str, metrics: list[str]) -> dict[str, object]:
        return {"id": did, "profile": "wq-analyser", "metrics": metrics, "interval_s": 3600}

    data["sites"] = [
        base | {"id": "dc-full", "name": "完整率测试甲", "district": "chengguan", "water_point": "tap",
                "small_supply": False, "devices": [device("wq-01", FULL)]},
        base | {"id": "dc-cl", "name": "完整率测试乙", "district": "xinhe", "water_point": "tap",
                "small_supply": False,
                "devices": [device("cl-01", ["free_chlorine", "ph"]),
                            device("tb-01", ["turbidity", "free_chlorine"])]},
    ]
    data["gateways"] = [{"id": "gw-dc", "name": "完整率网关",
                         "devices": ["dc-full/wq-01", "dc-cl/cl-01", "dc-cl/tb-01"]}]
    path.write_text(dump_toml(data), encoding="utf-8")
    load_registry(path)
    return path


def line(site: str, device: str, district: str, at: datetime, fields: dict[str, float]) -> str:
    body = ",".join(f"{k}={v!r}" for k, v in fields.items())
    return (f"drinking_water,device_id={device},district={district},gateway_id=gw-dc,site_id={site} "
            f"{body} {int(at.timestamp()) * 1_000_000_000}")


def readings() -> list[str]:
    out = []
    for h in range(24):
        at = DAY + timedelta(hours=h)
        full: dict[str, float] = {"conductivity": 400.0, "turbidity": 0.3, "ph": 7.2, "temperature": 15.0}
        if h < 20:
            full["free_chlorine"] = 0.4
        out.append(line("dc-full", "wq-01", "chengguan", at, full))
        out.append(line("dc-cl", "cl-01", "xinhe", at, {"free_chlorine": 0.5, "ph": 7.0}))
        tb: dict[str, float] = {"turbidity": 0.2}
        if h % 2 == 0:
            tb["free_chlorine"] = 0.6
        out.append(line("dc-cl", "tb-01", "xinhe", at, tb))
    return out


@pytest.fixture
def day_of_readings(tmp_path: Path, influxd, influx_db) -> tuple[InfluxSettings, Registry]:  # type: ignore[no-untyped-def]
    r = httpx.post(f"{influxd.url}/write", params={"db": influx_db}, content="\n".join(readings()).encode())
    assert r.status_code == 204, r.text
    return (InfluxSettings(url=influxd.url, database=influx_db),
            load_registry(make_registry(tmp_path / "registry.toml")))


async def test_completeness_by_day_counts_each_devices_own_first_metric(
    tmp_path: Path, day_of_readings: tuple[InfluxSettings, Registry]
) -> None:
    influx, reg = day_of_readings
    store = Store(f"sqlite:///{tmp_path / 'tasks.sqlite'}")
    try:
        day = await compute_report(influx, store.engine, reg, dict(default_rule_packs()),
                                   days_period("2026-11-01", "2026-11-02"))
        month = await compute_report(influx, store.engine, reg, dict(default_rule_packs()),
                                     month_period("2026-11"))
    finally:
        store.close()
    nov1 = date(2026, 11, 1)
    for report in (day, month):
        daily = {(d.site_id, d.device_id): d.daily for d in report.devices}
        assert daily == {("dc-full", "wq-01"): {nov1: 20}, ("dc-cl", "cl-01"): {nov1: 24},
                         ("dc-cl", "tb-01"): {nov1: 24}}
    # The report's table 逐日数据完整率: district, day, received, expected, completeness (%).
    rows = next(t for t in tables(day, {}) if t.stem == "daily").rows
    assert rows == [["chengguan", "2026-11-01", 20, 24, round(100 * 20 / 24, 2)],
                    ["xinhe", "2026-11-01", 48, 48, 100.0]]
    # The water device that never reports conductivity is complete that day.
    month_rows = {(r[0], r[1]): r for r in next(t for t in tables(month, {}) if t.stem == "daily").rows}
    assert month_rows[("xinhe", "2026-11-01")][2:] == [48, 48, 100.0]
    assert month_rows[("xinhe", "2026-11-02")][2:] == [0, 48, 0.0]
