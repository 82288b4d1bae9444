"""Every query of every panel, variables substituted, against the real InfluxDB holding
demo-city's simulated day, and every SQL panel against the alerts stage's real task table
on PostgreSQL. A renamed field, metric or alias leaves a panel without its rows and fails."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from simday import FilledInflux

from dashboards.boards import panel_targets
from dashboards.templating import TimeRange, substitute
from weijian.contract import CATALOGUE, Kind
from weijian.registry import Registry

# 18:30 local (10:30 UTC): the pool's chlorine alert is open, the rural analyser is silent.
AT = timedelta(hours=18, minutes=30)


def _range(filled: FilledInflux) -> TimeRange:
    return TimeRange(filled.day.start, filled.day.start + AT)


def _run(filled: FilledInflux, query: str, variables: dict[str, list[str]]) -> list[dict[str, Any]]:
    return filled.influx.query(substitute(query, _range(filled), variables), filled.database)


def _fields(series: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for s in series:
        out |= set(s["columns"]) | set(s.get("tags", {}))
    return out


def _measured(registry: Registry, kind: Kind, metric: str, sites: list[str] | None = None) -> bool:
    return any(
        metric in device.metrics
        for site in registry.sites.values() if site.kind is kind and (sites is None or site.id in sites)
        for device in site.devices
    )


def _board(boards: list[dict[str, Any]], uid: str) -> dict[str, Any]:
    return next(b for b in boards if b["uid"] == uid)


def _all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for top in board["panels"] for p in [top, *top.get("panels", [])] if p["type"] != "row"]


def _renamed(panel: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for t in panel.get("transformations", []):
        if t["id"] == "organize":
            names |= set(t["options"]["renameByName"])
    return names - {"Time"}


def test_every_influx_panel_of_the_overview_returns_its_fields(
    filled_influx: FilledInflux, boards: list[dict[str, Any]], registry: Registry
) -> None:
    board = _board(boards, "weijian-overview")
    variables = {"district": sorted(registry.districts)}
    checked = 0
    for panel in _all_panels(board):
        targets = [t for t in panel["targets"] if t["datasource"]["type"] == "influxdb"]
        if not targets:
            continue
        fields: set[str] = set()
        for target in targets:
            series = _run(filled_influx, target["query"], variables)
            assert series, f"{panel['title']} {target['refId']}: no rows"
            fields |= _fields(series)
            checked += 1
        assert _renamed(panel) <= fields, f"{panel['title']}: shows {_renamed(panel) - fields} it never gets"
    assert checked >= 8


def test_the_site_state_table_tells_normal_exceeding_and_silent(
    filled_influx: FilledInflux, boards: list[dict[str, Any]], registry: Registry
) -> None:
    panel = next(p for p in _all_panels(_board(boards, "weijian-overview")) if p["title"] == "各区站点状态")
    by_ref = {t["refId"]: t["query"] for t in panel["targets"]}
    variables = {"district": sorted(registry.districts)}
    reported = {s["tags"]["site_id"] for s in _run(filled_influx, by_ref["A"], variables)}
    live = {s["tags"]["site_id"] for s in _run(filled_influx, by_ref["B"], variables)}
    alerts = _run(filled_influx, by_ref["C"], variables)
    exceeding = {s["tags"]["site_id"]: s["values"][0][1] for s in alerts}
    assert reported == set(registry.sites)
    assert reported - live == {"xh-water-001"}  # silent from 17:00 to 20:00
    assert exceeding == {"yc-pool-001": 1}  # dosing failure: chlorine low since 15:00


def test_completeness_is_lower_where_a_device_went_silent(
    filled_influx: FilledInflux, boards: list[dict[str, Any]], registry: Registry
) -> None:
    overview = _all_panels(_board(boards, "weijian-overview"))
    panel = next(p for p in overview if p["title"].startswith("今日数据完整率"))
    water = next(t["query"] for t in panel["targets"] if '"drinking_water"' in t["query"])
    pct = {s["tags"]["district"]: s["values"][0][1] for s in _run(filled_influx, water, {})}
    assert pct["chengguan"] == pytest.approx(100, abs=1)
    assert 80 < pct["xinhe"] < 95  # 1.5 of 18.5 hours silent


@pytest.mark.parametrize("kind", list(Kind))
def test_every_panel_of_a_kind_dashboard_draws_its_metric(
    filled_influx: FilledInflux, boards: list[dict[str, Any]], registry: Registry, kind: Kind
) -> None:
    board = _board(boards, "weijian-" + kind.value.replace("_", "-"))
    variables = {
        "district": sorted(registry.districts),
        "site": sorted(s.id for s in registry.sites.values() if s.kind is kind),
    }
    drawn = set()
    for panel in _all_panels(board):
        if panel["type"] == "table":
            continue  # the cold chain's daily summary: its own test below
        (target,) = panel["targets"]
        metric = target["query"].split('"')[1]
        assert metric in CATALOGUE[kind]
        series = _run(filled_influx, target["query"], variables)
        values = [row[1] for s in series for row in s["values"] if row[1] is not None]
        sites = None
        if 'AND "site_id" =~ /^(' in target["query"]:
            sites = target["query"].split('"site_id" =~ /^(')[1].split(")$/")[0].split("|")
        if _measured(registry, kind, metric, sites):
            assert values, f"{panel['title']}: no values of {metric}"
            assert all(metric in s["columns"] for s in series)
            drawn.add(metric)
        else:
            assert not values  # nobody measures it: the panel waits for such a device
    sites = [s for s in registry.sites.values() if s.kind is kind]
    assert drawn == {m for site in sites for dev in site.devices for m in dev.metrics}


@pytest.mark.parametrize("kind", list(Kind))
def test_the_site_drilldown_shows_a_site_of_each_kind(
    filled_influx: FilledInflux, boards: list[dict[str, Any]], registry: Registry, kind: Kind
) -> None:
    board = _board(boards, "weijian-site")
    site = next(s for s in registry.sites.values() if s.kind is kind)
    variables = {"district": [site.district], "site": [site.id], "device": [d.id for d in site.devices]}
    row = next(p for p in board["panels"] if p["type"] == "row" and '"' + kind.value + '"' in
               p["panels"][0]["targets"][0]["query"])
    for panel in row["panels"]:
        (target,) = panel["targets"]
        metric = target["query"].split('"')[1]
        series = _run(filled_influx, target["query"], variables)
        measured = any(metric in d.metrics for d in site.devices)
        values = [r[1] for s in series for r in s["values"] if r[1] is not None]
        assert bool(values) == measured, f"{site.id} {panel['title']}"
        assert {s["tags"]["device_id"] for s in series if measured} <= {d.id for d in site.devices}


def test_the_drilldown_variables_list_the_registry(
    filled_influx: FilledInflux, boards: list[dict[str, Any]], registry: Registry
) -> None:
    board = _board(boards, "weijian-site")
    queries = {v["name"]: v["query"] for v in board["templating"]["list"]}
    assert set(queries) == {"district", "site", "device"}
    variables = {"district": ["xinhe"], "site": ["yc-cc-001"]}

    def values(name: str) -> set[str]:
        return {row[1] for s in _run(filled_influx, queries[name], variables) for row in s["values"]}

    assert values("district") == set(registry.districts)
    assert values("site") == {s.id for s in registry.sites.values() if s.district == "xinhe"}
    assert values("device") == {"fr-01", "fr-02"}


def test_alert_annotations_come_from_the_alert_measurement(
    filled_influx: FilledInflux, boards: list[dict[str, Any]]
) -> None:
    (annotation,) = [a for a in _board(boards, "weijian-site")["annotations"]["list"]
                     if a["datasource"]["type"] == "influxdb"]
    target = annotation["target"]
    series = _run(filled_influx, target["query"], {"site": ["yc-pool-001"]})
    assert series
    columns = set(series[0]["columns"])
    assert target["textColumn"] in columns
    assert set(target["tagsColumn"].split(",")) <= columns | {"rule", "severity"}
    assert [row[columns_index] for row in series[0]["values"]
            for columns_index in [series[0]["columns"].index("state")]] == ["firing"]


def test_every_influx_target_on_every_board_runs(
    filled_influx: FilledInflux, boards: list[dict[str, Any]], registry: Registry
) -> None:
    variables = {"district": sorted(registry.districts), "site": sorted(registry.sites),
                 "device": ["wq-01", "pc-01", "th-01", "fr-01", "fr-02", "fz-01"]}
    count = 0
    for board in boards:
        for _title, target in panel_targets(board):
            if target["datasource"]["type"] == "influxdb":
                _run(filled_influx, target["query"], variables)  # raises on an InfluxQL error
                count += 1
    assert count >= 40


def test_the_cold_chain_daily_summary_gives_each_fridges_day_min_max_and_hours_out_of_range(
    filled_influx: FilledInflux, boards: list[dict[str, Any]], registry: Registry
) -> None:
    board = _board(boards, "weijian-cold-chain")
    (panel,) = [p for p in _all_panels(board) if p["type"] == "table"]
    assert "每日温度摘要" in panel["title"]
    variables = {"district": sorted(registry.districts),
                 "site": sorted(s.id for s in registry.sites.values() if s.kind is Kind.COLD_CHAIN)}
    by_ref = {t["refId"]: _run(filled_influx, t["query"], variables) for t in panel["targets"]}
    # The raw readings, judged here in Python: China days, > 8 and < 2 degC.
    raw = filled_influx.influx.query(
        substitute('SELECT "temperature" FROM "cold_chain" WHERE $timeFilter GROUP BY "site_id", "device_id"',
                   _range(filled_influx), variables), filled_influx.database)
    interval = float(panel["targets"][1]["query"].split("* ")[1].split(" /")[0])
    china = timezone(timedelta(hours=8))
    expect: dict[tuple[str, str, str], list[float]] = {}
    for series in raw:
        key = (series["tags"]["site_id"], series["tags"]["device_id"])
        for ts, value in series["values"]:
            if value is None:
                continue
            day = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(china).date().isoformat()
            expect.setdefault((*key, day), []).append(value)
    assert expect, "the simulated day has cold-chain readings"

    def rows(ref: str) -> dict[tuple[str, str, str], list[Any]]:
        out = {}
        for series in by_ref[ref]:
            for row in series["values"]:
                day = datetime.fromisoformat(row[0].replace("Z", "+00:00")).astimezone(china)
                assert (day.hour, day.minute) == (0, 0)  # days begin at midnight in China
                tags = series["tags"]
                out[(tags["site_id"], tags["device_id"], day.date().isoformat())] = row[1:]
        return out

    minmax, above, below = rows("A"), rows("B"), rows("C")
    for key, values in expect.items():
        assert minmax[key] == [min(values), max(values)], key
        hot = sum(1 for v in values if v > 8) * interval / 3600
        cold = sum(1 for v in values if v < 2) * interval / 3600
        assert pytest.approx(hot) == ((above.get(key) or [0])[0] or 0), key
        assert pytest.approx(cold) == ((below.get(key) or [0])[0] or 0), key
    assert any(sum(1 for v in vs if v > 8) for vs in expect.values()), "the demo day has an excursion above 8"
