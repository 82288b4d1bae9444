"""The four duty-desk dashboards (overview, one per kind, site drill-down, tasks) as SDK objects.

Titles and labels are in Simplified Chinese for the duty desk (值班室); uids are stable so
that provisioning and ``dashboards push`` overwrite the same dashboards on every run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.dashboard import (
    AnnotationQuery,
    AnnotationTarget,
    Dashboard,
    DashboardSpecialValueMapOptions,
    DataTransformerConfig,
    DynamicConfigValue,
    SpecialValueMap,
    SpecialValueMatch,
    Threshold,
    ValueMappingResult,
    VariableRefresh,
)

from dashboards import influxql, tasks_sql
from dashboards.labels import KIND_TITLES, METRIC_LABELS, grafana_unit
from dashboards.limits import Variant, metric_variants, threshold_steps, variant_label
from dashboards.panels import rename, stat_panel, table_panel, timeseries_panel
from dashboards.targets import InfluxQL, Sql, influx_ref, tasks_ref
from weijian.contract import CATALOGUE, Kind
from weijian.registry import Registry, Site
from weijian.rules import AppliesTo, RulePack

__all__ = [
    "BoardOptions",
    "InfluxAnnotation",
    "build_all",
    "kind_dashboard",
    "kind_uid",
    "overview",
    "panel_targets",
    "site_drilldown",
    "tasks_board",
    "to_json",
]

_TAGS = ["weijian"]
_SITE_DEVICE = "$tag_site_id/$tag_device_id"  # legend: site/device


class BoardOptions:
    """What the dashboards need beyond the rule packs.

    Args:
        expected_interval_s: how often each device should report (completeness).
        silent_after_min: minutes without a reading before a site counts as silent.
        registry: the site registry, to restrict a limit's panel to the sites it applies to.
    """

    def __init__(self, expected_interval_s: float = 60.0, silent_after_min: int = 15,
                 registry: Registry | None = None) -> None:
        self.expected_interval_s = expected_interval_s
        self.silent_after_min = silent_after_min
        self.registry = registry


def kind_uid(kind: Kind) -> str:
    """The stable uid of a kind's dashboard."""
    return "weijian-" + kind.value.replace("_", "-")


class InfluxAnnotation(AnnotationQuery):
    """An annotation whose events come from an InfluxQL query (the ``alert`` measurement).

    The SDK's ``AnnotationTarget`` models only Grafana's built-in annotation store, so the
    InfluxDB plugin's target keys (``query``, ``rawQuery``, ``textColumn``, ``tagsColumn``)
    are added here; the validation test checks them with its own model.
    """

    def __init__(self, name: str, query: str, icon_color: str) -> None:
        super().__init__(name=name, datasource=influx_ref(), enable=True, hide=False,
                         icon_color=icon_color, target=AnnotationTarget())
        self.query = query

    def to_json(self) -> dict[str, object]:
        """The annotation's JSON, with the InfluxQL target."""
        out = super().to_json()
        out["target"] = {
            "refId": "Anno",
            "query": self.query,
            "rawQuery": True,
            "resultFormat": "table",
            "textColumn": "message",
            "tagsColumn": "rule,severity,state",
        }
        return out


class _Annotation(dash.AnnotationQuery):
    def __init__(self, annotation: InfluxAnnotation) -> None:
        super().__init__()
        self._annotation = annotation

    def build(self) -> AnnotationQuery:
        return self._annotation


def _query_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name).label(label).datasource(influx_ref()).query(query)
        .multi(True).include_all(True).all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )


def _board(uid: str, title: str, time_from: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title).uid(uid).tags(_TAGS).timezone("browser").refresh("1m")
        .time(time_from, "now").readonly()
    )


def _null_is(text: str, colour: str) -> SpecialValueMap:
    """A value mapping showing an empty cell as ``text``."""
    return SpecialValueMap(options=DashboardSpecialValueMapOptions(
        match=SpecialValueMatch.NULL, result=ValueMappingResult(text=text, color=colour)
    ))


def overview(options: BoardOptions) -> Dashboard:
    """值班总览: site states by district, open alerts, tasks and today's completeness."""
    states = table_panel(
        "各区站点状态",
        [
            InfluxQL("A", influxql.last_report_by_site(), "table"),
            InfluxQL("B", influxql.live_sites(options.silent_after_min), "table"),
            InfluxQL("C", influxql.open_alerts_by_site(), "table"),
        ],
        influx_ref(),
        [
            DataTransformerConfig(id_val="joinByField", options={"byField": "site_id", "mode": "outer"}),
            rename({
                "district": "区域", "site_id": "站点", "Time": "最后上报",
                "last_temperature": "最后温度", "recent_readings": f"近{options.silent_after_min}分钟读数",
                "open_alerts": "未处理告警",
            }),
        ],
    ).description(
        f"超标：有未处理告警；静默：近{options.silent_after_min}分钟无读数；否则正常。"
    ).override_by_name("recent_readings", [
        DynamicConfigValue(id_val="mappings", value=[_null_is("静默", "red")]),
    ]).override_by_name("open_alerts", [
        DynamicConfigValue(id_val="mappings", value=[_null_is("正常", "green")]),
        DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
    ]).thresholds(
        dash.ThresholdsConfig().steps([Threshold(value=None, color="green"), Threshold(value=1, color="red")])
    )
    alert_steps = [Threshold(value=None, color="green"), Threshold(value=1, color="red")]
    board = (
        _board("weijian-overview", "值班总览", "now/d")
        .with_panel(stat_panel("未处理告警", [InfluxQL("A", influxql.open_alert_count(), "table")],
                               influx_ref(), alert_steps))
        .with_panel(stat_panel("超期任务", [Sql("A", tasks_sql.overdue_count())], tasks_ref(), alert_steps))
        .with_panel(table_panel("任务状态", [Sql("A", tasks_sql.tasks_by_status())], tasks_ref(),
                                [rename({"status": "状态", "tasks": "任务数"})]).span(12).height(5))
        .with_panel(states)
        .with_panel(table_panel(
            "今日数据完整率（按区域）",
            [InfluxQL(ref, influxql.completeness_by_district(kind, options.expected_interval_s), "table")
             for ref, kind in zip("ABCD", Kind, strict=True)],
            influx_ref(),
            [
                DataTransformerConfig(id_val="joinByField", options={"byField": "district", "mode": "outer"}),
                rename({"district": "区域", **{k.value: f"{KIND_TITLES[k]}(%)" for k in Kind}}),
            ],
        ).unit("percent").decimals(1))
        .with_panel(table_panel(
            "未处理告警列表", [InfluxQL("A", influxql.open_alert_list(), "table")], influx_ref(),
            [rename({"district": "区域", "site_id": "站点", "device_id": "设备", "rule": "规则",
                     "severity": "级别", "state": "状态", "message": "内容", "value": "数值",
                     "threshold": "限值"})],
        ).span(24))
    )
    return board.build()


def _matching_sites(registry: Registry | None, kind: Kind, applies_to: AppliesTo) -> list[str] | None:
    if registry is None or applies_to == AppliesTo():
        return None
    wanted = {k: v for k, v in applies_to.model_dump().items() if v is not None}

    def matches(site: Site) -> bool:
        for key, value in wanted.items():
            have: Any = getattr(site, key, None)
            if (have.value if hasattr(have, "value") else have) != value:
                return False
        return True

    return [s.id for s in registry.sites.values() if s.kind is kind and matches(s)]


def _variant_panel(variant: Variant, registry: Registry | None) -> Any:
    label = variant_label(variant.applies_to)
    title = METRIC_LABELS[variant.metric] + (f"（{label}）" if label else "")
    query = influxql.kind_metric_series(variant.kind, variant.metric)
    sites = _matching_sites(registry, variant.kind, variant.applies_to)
    if sites:
        query = query.replace("$timeFilter", '"site_id" =~ /^(' + "|".join(sites) + ")$/ AND $timeFilter")
    limits = "、".join(f"{r.title}" for r in variant.rules)
    return timeseries_panel(
        title,
        [InfluxQL("A", query, alias=_SITE_DEVICE)],
        influx_ref(),
        grafana_unit(CATALOGUE[variant.kind][variant.metric]),
        threshold_steps(variant.rules),
        description=f"限值来自规则包：{limits}",
    )


def kind_dashboard(kind: Kind, pack: RulePack | None, options: BoardOptions) -> Dashboard:
    """One kind's dashboard: each metric per site, with the rule packs' limits as bands."""
    variants = metric_variants(pack) if pack is not None else {}
    board = (
        _board(kind_uid(kind), f"{KIND_TITLES[kind]}监测", "now-24h")
        .with_variable(_query_variable("district", "区域", influxql.districts_variable()))
        .with_variable(_query_variable("site", "站点", influxql.sites_variable(kind)))
    )
    for metric, unit in CATALOGUE[kind].items():
        if metric in variants:
            for variant in variants[metric]:
                board = board.with_panel(_variant_panel(variant, options.registry))
        else:
            board = board.with_panel(timeseries_panel(
                METRIC_LABELS[metric],
                [InfluxQL("A", influxql.kind_metric_series(kind, metric), alias=_SITE_DEVICE)],
                influx_ref(), grafana_unit(unit),
            ))
    if kind is Kind.COLD_CHAIN:
        board = board.with_panel(_fridge_tag_panel(options))
    return board.build()


def _fridge_tag_panel(options: BoardOptions) -> Any:
    """Per day and fridge: lowest, highest, hours above 8 °C and below 2 °C (Fridge-tag style)."""
    interval = options.expected_interval_s
    kind = Kind.COLD_CHAIN
    targets = [
        InfluxQL("A", influxql.daily_summary(kind, "temperature"), "table"),
        InfluxQL("B", influxql.daily_summary(kind, "temperature", '"temperature" > 8', interval, "above_h"),
                 "table"),
        InfluxQL("C", influxql.daily_summary(kind, "temperature", '"temperature" < 2', interval, "below_h"),
                 "table"),
    ]
    return table_panel("每日温度摘要（最低、最高、超出2–8℃时长）", targets, influx_ref(), [
        DataTransformerConfig(id_val="merge", options={}),
        rename({"Time": "日期", "site_id": "站点", "device_id": "设备", "min": "最低(℃)", "max": "最高(℃)",
                "above_h": "高于8℃(小时)", "below_h": "低于2℃(小时)"}),
    ]).span(24).decimals(1)


def site_drilldown() -> Dashboard:
    """站点详情: every metric of one site and device, with its alerts as annotations."""
    board = (
        _board("weijian-site", "站点详情", "now-24h")
        .with_variable(_query_variable("district", "区域", influxql.districts_variable()))
        .with_variable(_query_variable("site", "站点", influxql.sites_variable()))
        .with_variable(_query_variable("device", "设备", influxql.devices_variable()))
        .annotation(_Annotation(InfluxAnnotation("告警", influxql.alert_annotation(), "red")))
    )
    for kind in Kind:
        row = dash.Row(KIND_TITLES[kind])
        for metric, unit in CATALOGUE[kind].items():
            row = row.with_panel(timeseries_panel(
                METRIC_LABELS[metric],
                [InfluxQL("A", influxql.site_metric_series(kind, metric), alias="$tag_device_id")],
                influx_ref(), grafana_unit(unit),
            ).span(8))
        board = board.with_row(row)
    return board.build()


def tasks_board() -> Dashboard:
    """巡查任务: the task table from the tasks database (PostgreSQL)."""
    return (
        _board("weijian-tasks", "巡查任务", "now-7d")
        .with_panel(table_panel("任务状态", [Sql("A", tasks_sql.tasks_by_status())], tasks_ref(),
                                [rename({"status": "状态", "tasks": "任务数"})]))
        .with_panel(stat_panel("超期任务", [Sql("A", tasks_sql.overdue_count())], tasks_ref(),
                               [Threshold(value=None, color="green"), Threshold(value=1, color="red")]))
        .with_panel(table_panel(
            "任务列表", [Sql("A", tasks_sql.open_tasks())], tasks_ref(),
            [rename({"id": "编号", "title": "任务", "district": "区域", "site_id": "站点",
                     "severity": "级别", "status": "状态", "assignee": "处理人",
                     "created_at": "创建时间", "due_at": "期限"})],
        ).span(24).height(14))
    ).build()


def statistics_board() -> Dashboard:
    """监测统计（月度）: the monthly report's compliance and completeness per district.

    Reads ``report_monthly``, which ``weijian report monthly`` writes: the same figures, by the
    same definitions, as the report's PDF and workbook (docs/reports.md).
    """
    pct = [Threshold(value=None, color="red"), Threshold(value=90, color="orange"),
           Threshold(value=95, color="green")]
    board = (
        _board("weijian-statistics", "监测统计（月度）", "now-1y")
        .with_variable(_query_variable("district", "区域", influxql.districts_variable()))
        .with_panel(timeseries_panel("各区域月度合格率",
                                     [InfluxQL("A", influxql.monthly_figure("compliance_pct"))],
                                     influx_ref(), "percent", pct,
                                     "标记为 N 的读数中符合限值的比例；"
                                     "M、C、F、D、B、S、T 标记的读数不参与判定。")
                    .min(0).max(100))
        .with_panel(timeseries_panel("各区域月度数据完整率",
                                     [InfluxQL("A", influxql.monthly_figure("completeness_pct"))],
                                     influx_ref(), "percent", pct, "接收读数 / 按设备上报间隔应收读数。")
                    .min(0).max(100))
        .with_panel(timeseries_panel("各区域月度处置及时率",
                                     [InfluxQL("A", influxql.monthly_figure("on_time_pct"))],
                                     influx_ref(), "percent", pct, "按时办结任务 / 已办结或已到期任务。")
                    .min(0).max(100))
        .with_panel(table_panel(
            "最近月份：各区域各类别", [InfluxQL("A", influxql.monthly_table(), "table")], influx_ref(),
            [rename({"district": "区域", "kind": "类别", "compliance_pct": "合格率(%)",
                     "completeness_pct": "数据完整率(%)", "valid_rate_pct": "有效率(%)",
                     "on_time_pct": "处置及时率(%)", "alerts": "告警数", "tasks": "任务数"})],
        ).span(24))
    )
    return board.build()


def build_all(packs: Mapping[Kind, RulePack], options: BoardOptions) -> list[Dashboard]:
    """Every dashboard, overview first."""
    boards = [overview(options)]
    boards += [kind_dashboard(kind, packs.get(kind), options) for kind in Kind]
    boards += [site_drilldown(), tasks_board(), statistics_board()]
    return boards


def to_json(board: Dashboard) -> dict[str, Any]:
    """A dashboard as plain JSON data (what Grafana stores)."""
    import json

    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    data: dict[str, Any] = json.loads(json.dumps(board, cls=JSONEncoder))
    return data


def panel_targets(data: Mapping[str, Any]) -> Sequence[tuple[str, dict[str, Any]]]:
    """``(panel title, target)`` for every target of every panel, rows included."""
    out: list[tuple[str, dict[str, Any]]] = []
    for panel in data.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            out.extend((inner.get("title", ""), t) for t in inner.get("targets", []))
    return out
