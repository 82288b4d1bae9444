"""Panel targets the SDK has no builder for: raw InfluxQL and raw SQL, plus the data source refs.

grafana-foundation-sdk 11.6 ships query models for Prometheus, Loki, Elasticsearch and others,
but none for InfluxDB or PostgreSQL. These two classes implement its ``Dataquery`` variant
(``to_json``/``from_json``) and are registered with its runtime, so the SDK's own decoder
(``Dashboard.from_json``) turns our targets back into these classes instead of an opaque bag.
"""

from __future__ import annotations

from typing import Any, Final, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

__all__ = [
    "INFLUX_TYPE",
    "INFLUX_UID",
    "TASKS_TYPE",
    "TASKS_UID",
    "InfluxQL",
    "InfluxQLQuery",
    "Sql",
    "SqlQuery",
    "influx_ref",
    "register_variants",
    "tasks_ref",
]

# Stable uids: dashboards refer to data sources by uid, so provisioning and push must agree.
INFLUX_UID: Final = "weijian-influxdb"
INFLUX_TYPE: Final = "influxdb"
TASKS_UID: Final = "weijian-tasks"
# The PostgreSQL plugin's id since Grafana 10.3 (before: "postgres", still aliased).
TASKS_TYPE: Final = "grafana-postgresql-datasource"

ResultFormat = Literal["time_series", "table"]


def influx_ref() -> DataSourceRef:
    """Reference to the InfluxDB (InfluxQL) data source."""
    return DataSourceRef(type_val=INFLUX_TYPE, uid=INFLUX_UID)


def tasks_ref() -> DataSourceRef:
    """Reference to the PostgreSQL tasks data source."""
    return DataSourceRef(type_val=TASKS_TYPE, uid=TASKS_UID)


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target, as Grafana's InfluxDB plugin stores it (``rawQuery: true``)."""

    def __init__(self, ref_id: str = "A", query: str = "", result_format: ResultFormat = "time_series",
                 alias: str | None = None) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format
        self.alias = alias

    def to_json(self) -> dict[str, object]:
        """The target's JSON."""
        out: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": influx_ref().to_json(),
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            out["alias"] = self.alias
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Decode a target written by :meth:`to_json` (KeyError on a missing key)."""
        return cls(data["refId"], data["query"], data["resultFormat"], data.get("alias"))


class SqlQuery(cogvariants.Dataquery):
    """A raw SQL target of Grafana's PostgreSQL plugin (code editor mode)."""

    def __init__(self, ref_id: str = "A", raw_sql: str = "", fmt: ResultFormat = "table") -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.fmt = fmt

    def to_json(self) -> dict[str, object]:
        """The target's JSON."""
        return {
            "refId": self.ref_id,
            "datasource": tasks_ref().to_json(),
            "rawSql": self.raw_sql,
            "rawQuery": True,
            "editorMode": "code",
            "format": self.fmt,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Decode a target written by :meth:`to_json` (KeyError on a missing key)."""
        return cls(data["refId"], data["rawSql"], data["format"])


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder wrapper so the SDK's panel builders accept an :class:`InfluxQLQuery`."""

    def __init__(self, ref_id: str, query: str, result_format: ResultFormat = "time_series",
                 alias: str | None = None) -> None:
        self._query = InfluxQLQuery(ref_id, query, result_format, alias)

    def build(self) -> cogvariants.Dataquery:
        """The query."""
        return self._query


class Sql(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder wrapper so the SDK's panel builders accept a :class:`SqlQuery`."""

    def __init__(self, ref_id: str, raw_sql: str, fmt: ResultFormat = "table") -> None:
        self._query = SqlQuery(ref_id, raw_sql, fmt)

    def build(self) -> cogvariants.Dataquery:
        """The query."""
        return self._query


def register_variants() -> None:
    """Teach the SDK's decoder our two target types (idempotent)."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=INFLUX_TYPE, from_json_hook=InfluxQLQuery.from_json)
    )
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=TASKS_TYPE, from_json_hook=SqlQuery.from_json)
    )
