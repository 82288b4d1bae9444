"""The points the query tests read are the points ingest writes: the simulated day's line
protocol, parsed, equals what ``ingest.lineproto`` produces for the same readings and alerts.
If ingest renames a field or tag, the dashboards' fixture (and so their queries) must follow."""

from __future__ import annotations

from simday import _alerts, _readings, alert_line, reading_line

from ingest import lineproto
from weijian.registry import Registry
from weijian.rules import default_rule_packs


def _parse(line: str) -> tuple[str, frozenset[str], frozenset[str], str]:
    head, fields, ts = line.rsplit(" ", 2)
    measurement, *tags = head.split(",")
    return measurement, frozenset(tags), frozenset(fields.split(",")), ts


def test_readings_and_alerts_are_written_as_ingest_writes_them(registry: Registry) -> None:
    readings = list(_readings(registry, "demo-city", 900.0))
    alerts = _alerts(readings, registry, default_rule_packs())
    assert readings and alerts
    for reading in readings:
        district = registry.sites[reading.site_id].district
        assert _parse(reading_line(reading, district)) == _parse(lineproto.reading_line(reading, district))
    for alert in alerts:
        assert _parse(alert_line(alert)) == _parse(lineproto.alert_line(alert))
