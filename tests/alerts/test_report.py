"""The monthly report against a fixture month whose figures were computed by hand: readings in
and out of limits, flags M/C/D (excluded from compliance, counted apart), gaps, alerts with
tasks closed on time and late, one still open past due, one alert straddling the month's start.
Real InfluxDB for the readings, a real SQLite tasks database, the real `weijian report` CLI;
the PDF checked with poppler (fonts embedded, Chinese extracted as text) and the XLSX read back
with openpyxl."""

from __future__ import annotations

import csv
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from openpyxl import load_workbook

from alerts.engine import Alert
from alerts.statistics import compute_report, days_period, month_period, risk_score
from alerts.store import NewTask, Store
from dashboards.boards import BoardOptions, build_all, panel_targets, to_json
from dashboards.templating import TimeRange, substitute
from tests.e2e.conftest import dump_toml
from weijian.config import InfluxSettings
from weijian.contract import AlertState, Kind
from weijian.registry import load_registry
from weijian.rules import Severity, default_rule_packs

ROOT = Path(__file__).resolve().parents[2]
CHINA = timezone(timedelta(hours=8))
START = datetime(2026, 11, 1, tzinfo=CHINA)


def china(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    """China time, as UTC (what the store is given by the alert engine)."""
    return datetime(2026, month, day, hour, minute, tzinfo=CHINA).astimezone(UTC)


def registry(path: Path) -> Path:
    data = tomllib.loads((ROOT / "examples" / "registry.toml").read_text(encoding="utf-8"))
    base = next(s for s in data["sites"] if s["kind"] == "drinking_water")
    device = {
        "id": "wq-01",
        "profile": "wq-analyser",
        "metrics": ["turbidity", "free_chlorine"],
        "interval_s": 3600,
    }
    data["sites"] = [
        base
        | {
            "id": "rp-a",
            "name": "报表测试出厂水",
            "district": "chengguan",
            "water_point": "finished",
            "small_supply": False,
            "devices": [device],
        },
        base
        | {
            "id": "rp-b",
            "name": "报表测试末梢水",
            "district": "chengguan",
            "water_point": "tap",
            "small_supply": False,
            "devices": [device],
        },
        base
        | {
            "id": "rp-c",
            "name": "报表测试新河",
            "district": "xinhe",
            "water_point": "tap",
            "small_supply": False,
            "devices": [device],
        },
    ]
    data["gateways"] = [
        {"id": "gw-rp", "name": "报表网关", "devices": ["rp-a/wq-01", "rp-b/wq-01", "rp-c/wq-01"]}
    ]
    path.write_text(dump_toml(data), encoding="utf-8")
    load_registry(path)
    return path


def line(site: str, at: datetime, fields: dict[str, float | str]) -> str:
    body = ",".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v!r}" for k, v in fields.items())
    return (
        f"drinking_water,device_id=wq-01,district=chengguan,gateway_id=gw-rp,site_id={site} {body} "
        f"{int(at.timestamp()) * 1_000_000_000}"
    )


def fixture_readings() -> list[str]:
    """Site A: 700 of 720 hourly readings (20 missing at the end). Turbidity 0.5, except 10 at
    2.0 (N: exceeding), 5 at 3.0 flagged M, 3 at 0.4 flagged C, 2 without value flagged D.
    Free chlorine 0.5 throughout (within 0.3-2.0). Site B: all 720; turbidity 0.3; free chlorine
    0.2, 20 of them 0.01 (N, below the tap's 0.05)."""
    out = []
    for h in range(700):
        at = START + timedelta(hours=h)
        turbidity: dict[str, float | str] = {"turbidity": 0.5}
        if h < 10:
            turbidity = {"turbidity": 2.0}
        elif h < 15:
            turbidity = {"turbidity": 3.0, "turbidity_flag": "M"}
        elif h < 18:
            turbidity = {"turbidity": 0.4, "turbidity_flag": "C"}
        elif h < 20:
            turbidity = {"turbidity_flag": "D"}
        out.append(line("rp-a", at, turbidity | {"free_chlorine": 0.5}))
    for h in range(720):
        at = START + timedelta(hours=h)
        out.append(line("rp-b", at, {"turbidity": 0.3, "free_chlorine": 0.01 if h % 36 == 0 else 0.2}))
    # Outside the month: never counted.
    out.append(line("rp-a", START - timedelta(hours=1), {"turbidity": 9.0}))
    out.append(line("rp-a", START + timedelta(days=30), {"turbidity": 9.0}))
    return out


def alert(aid: str, site: str, rule: str, fired: datetime, resolved: datetime | None) -> Alert:
    return Alert(
        alert_id=aid,
        site_id=site,
        device_id="wq-01",
        rule_id=rule,
        kind=Kind.DRINKING_WATER,
        district="chengguan",
        severity=Severity.WARNING,
        state=AlertState.RESOLVED if resolved else AlertState.FIRING,
        since=fired,
        fired_at=fired,
        opened_at=fired,
        resolved_at=resolved,
        value=2.0,
        threshold=1.0,
    )


def task(aid: str, site: str, rule: str, created: datetime) -> NewTask:
    return NewTask(
        alert_id=aid,
        district="chengguan",
        site_id=site,
        device_id="wq-01",
        rule_id=rule,
        severity="warning",
        title="巡查核查",
        description="",
        due_at=created + timedelta(hours=24),
    )


def fixture_tasks(url: str) -> None:
    """A1: rp-a, 3 h in alarm; claimed after 30 min, closed after 5 h (on time).
    A2: rp-a, 1.5 h; claimed after 90 min, closed after 30 h (late); escalated once.
    B1: rp-b, fired 29th 20:00, never resolved (28 h to the month's end); open past due.
    B0: rp-b, fired 31 Oct 22:00, resolved 1 Nov 02:00: 2 h of alarm in November, not counted
    as a November alert, and its (October) task not counted either."""
    store = Store(url)
    turb, chlorine = "dw-turbidity-high", "dw-free-chlorine-tap-low"
    a1, a2 = china(5, 10), china(20, 8)
    b1, b0 = china(29, 20), china(31, 22, month=10)
    store.record(
        [
            alert("A1", "rp-a", turb, a1, a1 + timedelta(hours=3)),
            alert("A2", "rp-a", turb, a2, a2 + timedelta(hours=1, minutes=30)),
            alert("B1", "rp-b", chlorine, b1, None),
            alert("B0", "rp-b", chlorine, b0, china(1, 2)),
        ],
        [],
        [],
        now=a1,
    )
    for aid, site, rule, created in (
        ("A1", "rp-a", turb, a1),
        ("A2", "rp-a", turb, a2),
        ("B1", "rp-b", chlorine, b1),
        ("B0", "rp-b", chlorine, b0),
    ):
        store.record([], [task(aid, site, rule, created)], [], now=created)
    ids = {t["alert_id"]: t["id"] for t in store.tasks()}
    store.claim(ids["A1"], "wang", a1 + timedelta(minutes=30))
    store.close_task(
        ids["A1"],
        "wang",
        "已整改",
        {"finding_code": "confirmed_fixed", "finding_text": "情况属实，已责令整改"},
        a1 + timedelta(hours=5),
    )
    store.claim(ids["A2"], "liu", a2 + timedelta(minutes=90))
    store.record(
        [], [], [], audits=[("A2", "system", "alert_escalated", "level 2")], now=a2 + timedelta(minutes=30)
    )
    store.close_task(ids["A2"], "liu", "已核查", {}, a2 + timedelta(hours=30))
    store.close()


def write_fixture_month(tmp_path: Path, influx_url: str, influx_db: str) -> tuple[str, Path, Path]:
    """The fixture month in InfluxDB and its tasks database; returns (tasks url, registry, config)."""
    body = "\n".join(fixture_readings()).encode()
    r = httpx.post(f"{influx_url}/write", params={"db": influx_db}, content=body)
    assert r.status_code == 204, r.text
    url = f"sqlite:///{tmp_path / 'tasks.sqlite'}"
    fixture_tasks(url)
    reg = registry(tmp_path / "registry.toml")
    cfg = tmp_path / "central.toml"
    cfg.write_text(
        f'[tasks]\nurl = "{url}"\n[registry]\npath = "{reg}"\n'
        f'[influx]\nurl = "{influx_url}"\ndatabase = "{influx_db}"\n',
        encoding="utf-8",
    )
    return url, reg, cfg


@pytest.fixture
def month(tmp_path: Path, influxd, influx_db) -> dict[str, object]:  # type: ignore[no-untyped-def]
    url, reg, cfg = write_fixture_month(tmp_path, influxd.url, influx_db)
    return {
        "url": url,
        "registry": reg,
        "config": cfg,
        "influx": InfluxSettings(url=influxd.url, database=influx_db),
    }


async def test_every_figure_equals_the_hand_computed_one(month: dict[str, object]) -> None:
    store = Store(str(month["url"]))
    report = await compute_report(
        month["influx"],
        store.engine,
        load_registry(month["registry"]),  # type: ignore[arg-type]
        dict(default_rule_packs()),
        month_period("2026-11"),
    )
    store.close()
    sites = {s.site.id: s for s in report.sites}
    a, b, c = sites["rp-a"], sites["rp-b"], sites["rp-c"]
    ta = a.devices[0].metrics["turbidity"]
    # Flags M, C, D are not judged; they are counted apart. 10 valid values exceed 1 NTU.
    assert (ta.received, ta.valid, ta.judged, ta.exceeding) == (700, 690, 690, 10)
    assert dict(ta.flagged) == {"M": 5, "C": 3, "D": 2}
    assert ta.compliance == pytest.approx(680 / 690)
    assert a.compliance == pytest.approx(1380 / 1390)  # with free chlorine's 700 of 700
    assert a.completeness == pytest.approx(700 / 720) and a.devices[0].expected == 720
    assert a.valid_rate == pytest.approx(1390 / 1400)
    cb = b.devices[0].metrics["free_chlorine"]
    assert (cb.judged, cb.exceeding) == (720, 20)  # 0.01 < 0.05 at a tap; 0.2 complies there
    assert b.compliance == pytest.approx(1420 / 1440) and b.completeness == 1.0
    assert c.compliance is None and c.completeness == 0.0  # no data at all
    # Alerts and tasks.
    assert (a.alerts, b.alerts) == (2, 1)
    assert a.alarm_h == pytest.approx(4.5) and b.alarm_h == pytest.approx(30.0)
    assert (a.tasks.created, a.tasks.closed_on_time, a.tasks.closed_late) == (2, 1, 1)
    assert (b.tasks.created, b.tasks.open_overdue) == (1, 1)
    assert a.tasks.on_time == 0.5 and b.tasks.on_time == 0.0
    assert report.total.tasks.on_time == pytest.approx(1 / 3)
    assert sorted(a.tasks.claim_min) == [30, 90] and sorted(a.tasks.close_h) == [5, 30]
    assert report.total.tasks.escalations == 1
    assert sum(report.alerts_by_rule.values()) == 3  # B0 fired in October
    assert [e.alert_id for e in report.exceedances] == ["A1", "A2", "B1"]
    assert report.exceedances[0].finding == "情况属实，已责令整改。已整改"
    assert a.risk == risk_score(1380 / 1390, 700 / 720, 2, 0.5) == pytest.approx(18.8, abs=0.05)
    assert b.risk == pytest.approx(24.6, abs=0.05)
    # Any period: 15 Oct - 1 Dec is two requests (one per month), and the counts add up. The
    # reading of 31 Oct 23:00 (9 NTU) is in it now; the one of 1 Dec 00:00 still is not.
    store = Store(str(month["url"]))
    said: list[str] = []
    longer = await compute_report(month["influx"], store.engine, load_registry(month["registry"]),  # type: ignore[arg-type]
                                  dict(default_rule_packs()), days_period("2026-10-15", "2026-12-01"),
                                  progress=said.append)
    store.close()
    la = next(s for s in longer.sites if s.site.id == "rp-a")
    lt = la.devices[0].metrics["turbidity"]
    assert (lt.received, lt.valid, lt.exceeding) == (701, 691, 11)
    assert la.devices[0].expected == 47 * 24 and la.alerts == 2
    assert [line for line in said if "drinking_water: 20" in line] == [
        "[1/1] drinking_water: 2026-10-15 (1/2)", "[1/1] drinking_water: 2026-11-01 (2/2)"]


def weijian(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weijian", *args], cwd=ROOT, capture_output=True, text=True, timeout=180
    )


def test_monthly_report_files_pdf_with_chinese_text_and_xlsx_with_the_same_numbers(
    month: dict[str, object], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = weijian(
        "report",
        "monthly",
        "--month",
        "2026-11",
        "--district",
        "chengguan",
        "--out",
        str(out),
        "--config",
        str(month["config"]),
    )
    assert done.returncode == 0, done.stderr
    files = [Path(p) for p in done.stdout.split()]
    pdf = next(p for p in files if p.suffix == ".pdf")
    xlsx = next(p for p in files if p.suffix == ".xlsx")
    assert "report: [1/1] drinking_water" in done.stderr  # progress
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
    cjk = [row for row in fonts.splitlines() if "CJK" in row]
    assert cjk and all(" yes " in row for row in cjk), fonts  # embedded, so no boxes anywhere
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "卫生监督在线监测月报" in text and "合格率" in text and "报表测试出厂水" in text
    subprocess.run(
        ["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "page-1.png").stat().st_size > 1000
    wb = load_workbook(xlsx)
    sheet = wb["各监测点"]
    header = [c.value for c in sheet[2]]
    rows = {r[0]: dict(zip(header, r, strict=True)) for r in sheet.iter_rows(min_row=3, values_only=True)}
    assert set(rows) == {"rp-a", "rp-b"}  # the district only
    assert rows["rp-a"]["合格率(%)"] == round(100 * 1380 / 1390, 2)
    assert rows["rp-a"]["数据完整率(%)"] == round(100 * 700 / 720, 2)
    assert rows["rp-a"]["处置及时率(%)"] == 50.0 and rows["rp-b"]["告警数"] == 1
    with next(p for p in files if p.name.endswith("-sites.csv")).open(encoding="utf-8-sig") as f:
        by_csv = {r["监测点编号"]: r for r in csv.DictReader(f)}
    assert float(by_csv["rp-a"]["合格率(%)"]) == rows["rp-a"]["合格率(%)"]
    risk = weijian("report", "risk", "--month", "2026-11", "--config", str(month["config"]))
    assert risk.returncode == 0, risk.stderr
    order = [line.split()[1] for line in risk.stdout.splitlines()[1:]]
    assert order[:3] == ["rp-c", "rp-b", "rp-a"]  # no data at all is the highest risk
    # The figures went to InfluxDB, and the statistics dashboard's panels show them.
    assert "figure points stored" in done.stderr
    board = next(b for b in build_all(default_rule_packs(), BoardOptions()) if b.uid == "weijian-statistics")
    influx: InfluxSettings = month["influx"]  # type: ignore[assignment]
    span = TimeRange(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC))
    shown = {}
    for title, target in panel_targets(to_json(board)):
        q = substitute(target["query"], span, {"district": ["chengguan"]})
        series = httpx.get(f"{influx.url}/query", params={"db": influx.database, "q": q}).json()
        for s in series["results"][0].get("series", []):
            shown[(title, s["tags"].get("kind", "all"))] = dict(
                zip(s["columns"], s["values"][-1], strict=True)
            )
    compliance = shown[("各区域月度合格率", "all")]["compliance_pct"]
    assert compliance == round(100 * (1380 + 1420) / (1390 + 1440), 2)  # rp-a and rp-b pooled, as the PDF
    assert shown[("各区域月度处置及时率", "all")]["on_time_pct"] == round(100 / 3, 2)
    assert shown[("最近月份：各区域各类别", "drinking_water")]["completeness_pct"] == round(
        100 * 1420 / 1440, 2
    )


def test_clear_errors_for_no_data_an_unknown_district_and_influxdb_down(
    month: dict[str, object], tmp_path: Path
) -> None:
    cfg = str(month["config"])
    unknown = weijian(
        "report",
        "monthly",
        "--month",
        "2026-11",
        "--district",
        "nowhere",
        "--out",
        str(tmp_path),
        "--config",
        cfg,
    )
    assert unknown.returncode == 2 and "nowhere" in unknown.stderr and "chengguan" in unknown.stderr
    empty = weijian("report", "monthly", "--month", "2025-01", "--out", str(tmp_path), "--config", cfg)
    assert empty.returncode == 1 and "no readings" in empty.stderr
    bad_month = weijian("report", "risk", "--month", "November", "--config", cfg)
    assert bad_month.returncode == 2 and "YYYY-MM" in bad_month.stderr
    backwards = weijian("report", "risk", "--from", "2026-12-01", "--to", "2026-11-01", "--config", cfg)
    assert backwards.returncode == 2 and "not after" in backwards.stderr
    same = weijian("report", "risk", "--from", "2026-11-01", "--to", "2026-12-01", "--config", cfg)
    by_month = weijian("report", "risk", "--month", "2026-11", "--config", cfg)
    assert same.returncode == 0 and same.stdout == by_month.stdout  # any period; a month is one of them
    down = subprocess.run(
        [sys.executable, "-m", "weijian", "report", "risk", "--month", "2026-11", "--config", cfg],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "WEIJIAN_INFLUX__URL": "http://127.0.0.1:9"},
    )
    assert down.returncode == 1 and "InfluxDB" in down.stderr and "unavailable" in down.stderr
