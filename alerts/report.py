"""The monthly report's files: PDF (matplotlib, with a CJK font embedded), XLSX (openpyxl), CSV.

Every table is built once (:func:`tables`: a title and rows) and written to the three formats,
so the PDF, the workbook and the CSV files always carry the same numbers. Charts: compliance
by site, completeness by day per district, alerts by rule, and the distribution of times to
close. Text in Simplified Chinese; the font is Noto Sans CJK from Debian's ``fonts-noto-cjk``
(embedded in the PDF as a CID font, so Chinese renders as text everywhere).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from alerts.statistics import CHINA, FLAGS, Report, SiteFigures, median, p90

__all__ = ["CJK_FONTS", "Table", "tables", "write_report"]

CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)
KIND_ZH = {
    "drinking_water": "生活饮用水",
    "swimming_pool": "游泳场所水质",
    "medical_waste": "医疗废物暂存",
    "cold_chain": "疫苗冷链",
}
SEVERITY_ZH = {"critical": "严重", "warning": "警告", "info": "提示"}
STATUS_ZH = {"open": "待认领", "claimed": "处置中", "resolved": "待办结", "closed": "已办结"}


@dataclass
class Table:
    """A table of the report: its file stem, title, header and rows (numbers stay numbers)."""

    stem: str
    title: str
    header: list[str]
    rows: list[list[Any]]


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def _num(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _local(at: datetime | None) -> str:
    return at.astimezone(CHINA).strftime("%Y-%m-%d %H:%M") if at else ""


def _figures_row(name: str, f: SiteFigures) -> list[Any]:
    t = f.tasks
    return [
        name,
        len(f.devices),
        _pct(f.compliance),
        _pct(f.completeness),
        _pct(f.valid_rate),
        f.alerts,
        round(f.alarm_h, 1),
        t.created,
        _pct(t.on_time),
        _num(median(t.claim_min)),
        _num(p90(t.claim_min)),
        _num(median(t.close_h)),
        _num(p90(t.close_h)),
        t.escalations,
    ]


_FIGURES = [
    "",
    "设备数",
    "合格率(%)",
    "数据完整率(%)",
    "有效率(%)",
    "告警数",
    "告警时长(小时)",
    "任务数",
    "处置及时率(%)",
    "认领用时中位数(分钟)",
    "认领用时P90(分钟)",
    "办结用时中位数(小时)",
    "办结用时P90(小时)",
    "升级次数",
]


def tables(report: Report, district_names: dict[str, str],
           unit_names: dict[str, str] | None = None) -> list[Table]:
    """Every table of the report, in the order the PDF prints them."""
    unit_names = unit_names or {}
    total = report.total
    summary = Table("summary", "汇总", ["指标", "数值"], [])
    row = _figures_row("全部", total)
    summary.rows = [[label, value] for label, value in zip(_FIGURES[1:], row[1:], strict=True)]
    by_district = report.group(lambda s: s.site.district)
    districts = Table(
        "districts",
        "各辖区",
        ["辖区", *_FIGURES[1:]],
        [_figures_row(district_names.get(d, d), f) for d, f in sorted(by_district.items())],
    )
    by_kind_district = report.group(lambda s: f"{s.site.kind.value}|{s.site.district}")
    kinds = Table(
        "kinds",
        "各类别各辖区",
        ["类别", "辖区", *_FIGURES[1:]],
        [
            [
                KIND_ZH.get(k.split("|")[0], k),
                district_names.get(k.split("|")[1], k),
                *_figures_row("", f)[1:],
            ]
            for k, f in sorted(by_kind_district.items())
        ],
    )
    by_unit = report.group(lambda s: s.site.unit)
    units = Table(
        "units",
        "各单位",
        ["单位编号", "单位", *_FIGURES[1:]],
        [[u, *_figures_row(unit_names.get(u, u), f)] for u, f in sorted(by_unit.items())],
    )
    sites = Table(
        "sites",
        "各监测点",
        ["监测点编号", "监测点", "辖区", "类别", "风险分", *_FIGURES[1:]],
        [
            [
                s.site.id,
                s.site.name,
                district_names.get(s.site.district, s.site.district),
                KIND_ZH.get(s.site.kind.value),
                s.risk,
                *_figures_row("", s)[1:],
            ]
            for s in sorted(report.sites, key=lambda s: (-s.risk, s.site.id))
        ],
    )
    metrics = Table(
        "metrics",
        "各指标合格与标记",
        [
            "监测点编号",
            "设备",
            "指标",
            "限值",
            "接收数",
            "有效数",
            "参与判定",
            "超标数",
            "合格率(%)",
            *(f"标记{f}" for f in FLAGS),
        ],
        [],
    )
    for d in report.devices:
        for m in sorted(d.metrics.values(), key=lambda m: m.metric):
            metrics.rows.append(
                [
                    d.site_id,
                    d.device_id,
                    m.metric,
                    m.limits,
                    m.received,
                    m.valid,
                    m.judged,
                    m.exceeding,
                    _pct(m.compliance),
                    *(m.flagged.get(f, 0) for f in FLAGS),
                ]
            )
    daily: dict[tuple[str, Any], list[int]] = defaultdict(lambda: [0, 0])
    for d in report.devices:
        per_day = d.expected / max(1.0, report.period.seconds / 86_400)
        for day in _days(report):
            acc = daily[(d.district, day)]
            acc[0] += d.daily.get(day, 0)
            acc[1] += round(per_day)
    completeness = Table(
        "daily",
        "逐日数据完整率",
        ["辖区", "日期", "接收", "应收", "完整率(%)"],
        [
            [
                district_names.get(k[0], k[0]),
                k[1].isoformat(),
                v[0],
                v[1],
                _pct(min(1.0, v[0] / v[1]) if v[1] else None),
            ]
            for k, v in sorted(daily.items())
        ],
    )
    rules = Table(
        "rules",
        "告警按规则",
        ["规则", "名称", "级别", "次数"],
        [
            [rule, report.rule_titles.get(rule, rule), SEVERITY_ZH.get(sev, sev), n]
            for (rule, sev), n in sorted(report.alerts_by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    )
    exceedances = Table(
        "exceedances",
        "超标及处置情况",
        [
            "告警时间",
            "监测点",
            "辖区",
            "规则",
            "级别",
            "实测值",
            "限值",
            "恢复时间",
            "任务",
            "任务状态",
            "处置人",
            "办结时间",
            "处置结论",
        ],
        [
            [
                _local(e.fired_at),
                e.site_name,
                district_names.get(e.district, e.district),
                e.rule_title,
                SEVERITY_ZH.get(e.severity, e.severity),
                e.value,
                e.threshold,
                _local(e.resolved_at),
                e.task_id,
                STATUS_ZH.get(e.task_status or "", e.task_status or "无任务"),
                e.assignee or "",
                _local(e.closed_at),
                e.finding or "",
            ]
            for e in report.exceedances
        ],
    )
    return [summary, districts, kinds, units, sites, metrics, completeness, rules, exceedances]


def _days(report: Report) -> list[Any]:
    start = report.period.start.astimezone(CHINA).date()
    n = round(report.period.seconds / 86_400)
    return [start + timedelta(days=i) for i in range(n)]


def write_report(report: Report, out: Path, district_names: dict[str, str], title: str,
                 unit_names: dict[str, str] | None = None) -> list[Path]:
    """Write ``<out>/report-<period>[-<district>].pdf``, ``.xlsx`` and one CSV per table."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"report-{report.period.label}" + (f"-{report.district}" if report.district else "")
    built = tables(report, district_names, unit_names)
    written = [_pdf(report, built, out / f"{stem}.pdf", title), _xlsx(built, out / f"{stem}.xlsx", title)]
    for table in built:
        path = out / f"{stem}-{table.stem}.csv"
        with path.open("w", encoding="utf-8-sig", newline="") as f:  # with a BOM: Excel reads it as UTF-8
            w = csv.writer(f)
            w.writerow(table.header)
            w.writerows(["" if v is None else v for v in row] for row in table.rows)
        written.append(path)
    return written


def _xlsx(built: Sequence[Table], path: Path, title: str) -> Path:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    wb.remove(wb.active)
    for table in built:
        ws = wb.create_sheet(table.title[:31])
        ws.append([title if table.stem == "summary" else table.title])
        ws["A1"].font = Font(bold=True)
        ws.append(table.header)
        for row in table.rows:
            ws.append(row)
        for i, _ in enumerate(table.header, 1):
            ws.column_dimensions[ws.cell(row=2, column=i).column_letter].width = 14
    wb.save(path)
    return path


def cjk_font() -> str:
    """The first CJK font of :data:`CJK_FONTS` that is installed.

    Raises:
        FileNotFoundError: none is (install Debian's fonts-noto-cjk).
    """
    for candidate in CJK_FONTS:
        if Path(candidate).is_file():
            return candidate
    raise FileNotFoundError("no CJK font: install Debian's fonts-noto-cjk (./run.sh test does)")


def _pdf(report: Report, built: Sequence[Table], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import logging

    from matplotlib import font_manager
    from matplotlib import pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    for noisy in ("fontTools", "matplotlib"):  # they log every font subset and axis unit at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    font = cjk_font()
    font_manager.fontManager.addfont(font)
    name = font_manager.FontProperties(fname=font).get_name()
    plt.rcParams.update({"font.family": name, "pdf.fonttype": 42, "axes.unicode_minus": False})
    a4 = (8.27, 11.69)
    by_name = {t.stem: t for t in built}
    with PdfPages(path, metadata={"Title": title, "Creator": "weijian"}) as pdf:
        fig = plt.figure(figsize=a4)
        fig.text(0.08, 0.94, title, fontsize=16, weight="bold")
        fig.text(
            0.08,
            0.91,
            f"统计期：{_local(report.period.start)} 至 {_local(report.period.end)}（北京时间）",
            fontsize=10,
        )
        _draw_table(fig, [0.08, 0.35, 0.84, 0.52], by_name["summary"])
        fig.text(
            0.08,
            0.30,
            "口径：合格率只计标记为 N 的读数，M、C、F、D、B、S、T 标记的读数不参与判定、单独计数；"
            "完整率=接收读数/按设备上报间隔应收读数；处置及时率=按时办结任务/已办结或已到期任务。"
            "详见 docs/reports.md。",
            fontsize=8,
            wrap=True,
        )
        pdf.savefig(fig)
        plt.close(fig)
        for stem in ("districts", "kinds"):
            _table_pages(pdf, plt, by_name[stem], a4)
        # Charts.
        fig, axes = plt.subplots(2, 1, figsize=a4)
        sites = sorted(
            (s for s in report.sites if s.compliance is not None), key=lambda s: s.compliance or 0
        )[:30]
        axes[0].barh(
            [s.site.name[:14] for s in sites], [100 * (s.compliance or 0) for s in sites], color="#0b5cad"
        )
        axes[0].set_title("各监测点合格率（%，最低的30个）")
        axes[0].set_xlim(0, 100)
        axes[0].tick_params(axis="y", labelsize=6)
        daily = by_name["daily"]
        series: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for district, day, _, _, pct in daily.rows:
            if pct is not None:
                series[district].append((day[5:], pct))
        for district, points in series.items():
            axes[1].plot([p[0] for p in points], [p[1] for p in points], marker=".", label=district)
        axes[1].set_title("逐日数据完整率（%）")
        axes[1].set_ylim(0, 105)
        axes[1].tick_params(axis="x", labelrotation=90, labelsize=6)
        if series:
            axes[1].legend(fontsize=7)
        fig.tight_layout()
        pdf.savefig(fig)
        plt.close(fig)
        fig, axes = plt.subplots(2, 1, figsize=a4)
        rules = by_name["rules"].rows[:20]
        axes[0].barh([r[1][:16] for r in rules][::-1], [r[3] for r in rules][::-1], color="#ef6c00")
        axes[0].set_title("告警次数（按规则）")
        axes[0].tick_params(axis="y", labelsize=7)
        close_h = [h for s in report.sites for h in s.tasks.close_h]
        axes[1].hist(close_h or [0], bins=20, color="#2e7d32")
        axes[1].set_title("任务办结用时分布（小时）")
        axes[1].set_xlabel("小时")
        axes[1].set_ylabel("任务数")
        fig.tight_layout()
        pdf.savefig(fig)
        plt.close(fig)
        for stem in ("units", "sites", "exceedances"):
            _table_pages(pdf, plt, by_name[stem], a4)
    return path


def _table_pages(pdf: Any, plt: Any, table: Table, size: tuple[float, float], per_page: int = 28) -> None:
    rows = table.rows or [["（无）"] + [""] * (len(table.header) - 1)]
    for i in range(0, len(rows), per_page):
        fig = plt.figure(figsize=size[::-1])  # landscape: wide tables
        fig.text(
            0.04, 0.95, table.title + (f"（续 {i // per_page + 1}）" if i else ""), fontsize=12, weight="bold"
        )
        _draw_table(
            fig,
            [0.02, 0.04, 0.96, 0.88],
            Table(table.stem, table.title, table.header, rows[i : i + per_page]),
        )
        pdf.savefig(fig)
        plt.close(fig)


def _width(text: str) -> int:
    """Display width: a CJK character is two columns."""
    return sum(2 if ord(c) > 0x2E80 else 1 for c in text)


def _draw_table(fig: Any, box: list[float], table: Table) -> None:
    ax = fig.add_axes(box)
    ax.axis("off")
    cells = [
        ["—" if v is None else (str(v)[:40] if not isinstance(v, float) else f"{v:.4g}") for v in row]
        for row in table.rows
    ] or [[""] * len(table.header)]
    # Columns as wide as their longest text (a header wraps at 8 characters), so nothing overlaps.
    need = [max([min(_width(h), 16)] + [_width(r[i]) for r in cells]) + 2 for i, h in enumerate(table.header)]
    widths = [n / sum(need) for n in need]
    header = [h if _width(h) <= 16 else h[:8] + "\n" + h[8:] for h in table.header]
    t = ax.table(cellText=cells, colLabels=header, colWidths=widths, loc="upper center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(6 if len(table.header) > 8 else 9)
    t.scale(1, 1.3)


FIGURES_MEASUREMENT = "report_monthly"


def figure_lines(report: Report) -> list[str]:
    """The report's figures per district (and per kind, and ``kind=all``) as InfluxDB line protocol.

    Measurement ``report_monthly``, tags ``district`` and ``kind``, time = the month's start
    (China time); fields ``compliance_pct``, ``completeness_pct``, ``valid_rate_pct``,
    ``on_time_pct`` (each only when defined), ``alerts``, ``tasks``, ``devices``. The statistics
    dashboard reads these, so Grafana shows the report's own figures, by the report's definitions.

    Raises:
        ValueError: the report's period is not exactly one calendar month (its figures would
            overwrite that month's point with another period's).
    """
    if report.period.month is None:
        raise ValueError(f"the period {report.period.label} is not one whole calendar month: "
                         f"its figures are not stored in {FIGURES_MEASUREMENT}")
    at = int(report.period.start.timestamp()) * 1_000_000_000
    pooled = report.group(lambda s: f"{s.site.district}|{s.site.kind.value}")
    pooled |= {f"{d}|all": f for d, f in report.group(lambda s: s.site.district).items()}
    out = []
    for key, f in sorted(pooled.items()):
        district, kind = key.split("|")
        fields = {"compliance_pct": _pct(f.compliance), "completeness_pct": _pct(f.completeness),
                  "valid_rate_pct": _pct(f.valid_rate), "on_time_pct": _pct(f.tasks.on_time)}
        body = [f"{k}={v!r}" for k, v in fields.items() if v is not None]
        body += [f"alerts={f.alerts}i", f"tasks={f.tasks.created}i", f"devices={len(f.devices)}i"]
        out.append(f"{FIGURES_MEASUREMENT},district={district},kind={kind} {','.join(body)} {at}")
    return out
