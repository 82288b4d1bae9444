"""``weijian tasks ...``: tasks, the delivery log, silences, the API server, schema migrations."""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from typing import Any

from weijian.cli import add_config_argument, settings_and_registry
from weijian.config import load_settings
from weijian.errors import UsageError

__all__ = ["register"]

_MAX_SILENCE_H = 24 * 31  # a window longer than a month is a decommissioning, not maintenance
MAX_TASK_ID = 2**31 - 1  # as the task API bounds ids: the tasks table's id is 32-bit on PostgreSQL


def _task_id(text: str) -> int:
    """A task id argument: an integer 1..2^31-1 (argparse names the argument, exit 2).

    Raises:
        argparse.ArgumentTypeError: not such an integer.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a task id (an integer 1 to {MAX_TASK_ID})") from None
    if not 1 <= value <= MAX_TASK_ID:
        raise argparse.ArgumentTypeError(f"{text}: task ids are 1 to {MAX_TASK_ID}")
    return value


def _no_task(task_id: int) -> int:
    """An unknown task id: not bad usage (the row is missing), exit 1 as docs/alerts.md says."""
    print(f"no task {task_id}", file=sys.stderr)
    return 1


def _store(args: argparse.Namespace) -> Any:
    from alerts.store import Store

    settings = load_settings(args.config)
    return settings, Store(settings.tasks.url, settings.alerts.db_timeout_s)


def _print(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def _at_least(option: str, value: float, minimum: float) -> None:
    """Bad usage unless ``value`` is a finite number at least ``minimum``.

    argparse's ``type=float`` takes ``nan``, ``inf`` and negative numbers, and ``type=int``
    negative ones.

    Raises:
        UsageError: naming the option and the value (exit 2).
    """
    if not (math.isfinite(value) and value >= minimum):
        raise UsageError(f"{option} {value}: must be a number of at least {minimum:g}")


def _gps(text: str) -> list[float]:
    """``--gps lat,lon``: degrees (WGS 84), in range, as the task API takes them.

    Raises:
        UsageError: not two numbers separated by a comma, or out of range (exit 2).
    """
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError("two numbers")
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        raise UsageError(f"--gps {text!r}: give latitude,longitude in degrees, e.g. 30.1,117.2") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # also false for nan; inf is out of range
        raise UsageError(f"--gps {text!r}: latitude must be within -90..90 and longitude within "
                         "-180..180 (degrees, WGS 84)")
    return [lat, lon]


def _list(args: argparse.Namespace) -> int:
    _, store = _store(args)
    districts = args.district or None
    for t in store.tasks(districts=districts, status=args.status):
        print(f"#{t['id']:<5} {t['status']:<9} {t['severity']:<8} {t['district']:<12} "
              f"due {t['due_at']:%Y-%m-%d %H:%M}  {t['assignee'] or '-':<10} {t['title']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    _, store = _store(args)
    task = store.task(args.id)
    if task is None:
        return _no_task(args.id)
    _print(task)
    return 0


def _claim(args: argparse.Namespace) -> int:
    _, store = _store(args)
    if store.task(args.id) is None:
        return _no_task(args.id)
    if not store.claim(args.id, args.assignee, datetime.now(UTC)):
        print(f"task {args.id} is not open (already claimed or closed)")
        return 1
    print(f"task {args.id} claimed by {args.assignee}")
    return 0


def _close(args: argparse.Namespace) -> int:
    evidence: dict[str, Any] = {"photos": args.photo or []}
    if args.gps is not None:
        evidence["gps"] = _gps(args.gps)
    if args.on_site_min is not None:
        _at_least("--on-site-min", args.on_site_min, 0)
        evidence["on_site_min"] = args.on_site_min
    _, store = _store(args)
    if store.task(args.id) is None:
        return _no_task(args.id)
    if not store.close_task(args.id, args.actor, args.finding, evidence, datetime.now(UTC)):
        print(f"task {args.id} is not claimed (claim it first) or already closed")
        return 1
    print(f"task {args.id} closed")
    return 0


def _notifications(args: argparse.Namespace) -> int:
    _at_least("--limit", args.limit, 1)
    _, store = _store(args)
    for d in store.deliveries(recipient=args.recipient, alert_id=args.alert, limit=args.limit):
        print(f"{d['created_at']:%Y-%m-%d %H:%M:%S} {d['status']:<9} {d['channel']:<8} {d['recipient']:<12} "
              f"tries {d['attempts']:<3} {d['last_error'] or '':<16} {d['payload'].get('text', '')}")
    return 0


def _silence_add(args: argparse.Namespace) -> int:
    from alerts.service import new_silence
    from weijian.rules import DEFAULT_RULES_DIR, load_rule_packs

    settings, registry = settings_and_registry(args)
    site = registry.sites.get(args.site)
    if site is None:
        raise UsageError(f"--site {args.site!r}: no such site in {registry.path}")
    devices = {d.id: d.kind or site.kind for s, d in registry.devices() if s.id == site.id}
    if args.device is not None and args.device not in devices:
        raise UsageError(f"--device {args.device!r}: site {site.id!r} has no such device in {registry.path}")
    if args.rule is not None:
        # Only a rule that can fire there: one of the pack of the site's kind (of the device's,
        # when a device of another kind is named or the site has one).
        packs = load_rule_packs(settings.alerts.rules_dir or DEFAULT_RULES_DIR)
        kinds = sorted({devices[args.device]} if args.device is not None
                       else {site.kind, *devices.values()})
        rules = {r.id for kind in kinds if kind in packs for r in packs[kind].rules}
        if args.rule not in rules:
            where = f"device {args.device!r}" if args.device is not None else f"site {site.id!r}"
            names = ", ".join(k.value for k in kinds)
            raise UsageError(f"--rule {args.rule!r}: no such rule in the rule pack of {where} ({names})")
    starts = None
    if args.starts is not None:
        try:
            starts = datetime.fromisoformat(args.starts)
        except ValueError as exc:
            raise UsageError(f"--starts {args.starts!r}: not an ISO 8601 time ({exc})") from exc
        if starts.tzinfo is None:
            raise UsageError(f"--starts {args.starts!r}: give the offset, e.g. 2026-11-24T09:00+08:00")
    if not 0 < args.hours <= _MAX_SILENCE_H:
        raise UsageError(f"--hours {args.hours}: must be more than 0 and at most {_MAX_SILENCE_H}")
    silence = new_silence(site.id, args.hours, args.reason, args.by, device_id=args.device,
                          rule_id=args.rule, starts=starts)
    _, store = _store(args)
    store.add_silence(silence)
    print(f"silence {silence.id}: {site.name} ({site.id}) {silence.device_id or '全部设备'} "
          f"{silence.rule_id or '全部规则'} {silence.starts.isoformat()} .. {silence.ends.isoformat()}: "
          f"{silence.reason} ({silence.created_by}); the running alerts service applies it at its next tick")
    return 0


def _silence_list(args: argparse.Namespace) -> int:
    _, store = _store(args)
    now = datetime.now(UTC)
    for s in store.silences():
        if args.all or s.ends > now:
            state = "active" if s.starts <= now < s.ends else ("ended" if s.ends <= now else "scheduled")
            print(f"{s.id}  {state:<9} {s.site_id:<14} {s.device_id or '*':<8} {s.rule_id or '*':<28} "
                  f"{s.starts:%Y-%m-%d %H:%M} .. {s.ends:%Y-%m-%d %H:%M} UTC  {s.reason} ({s.created_by})")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from alerts.store import TasksDbUnavailable, migrate, shown_url

    _at_least("--wait", args.wait, 0)
    settings = load_settings(args.config)
    where = shown_url(settings.tasks.url)
    try:
        before, after = migrate(settings.tasks.url, timeout_s=args.wait)
    except TasksDbUnavailable as exc:
        print(f"alerts database not migrated: {exc}", file=sys.stderr)
        return 1
    if before == after:
        print(f"alerts database {where}: already at {after}")
    else:
        print(f"alerts database {where}: {before or '(empty)'} -> {after}")
    return 0


def _accounts(settings: Any, store: Any) -> Any:
    from alerts.accounts import Accounts

    a = settings.alerts
    return Accounts(store.engine, access_ttl_s=a.api_access_ttl_s, refresh_ttl_s=a.api_refresh_ttl_s,
                    max_failed=a.api_max_failed_logins, lockout_s=a.api_lockout_s)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from alerts.api import ApiOptions, build_app, is_loopback
    from weijian.errors import ConfigError
    from weijian.registry import load_registry
    from weijian.rules import load_rule_packs

    settings = load_settings(args.config)
    a = settings.alerts
    if a.api_tls_cert is None and not is_loopback(a.api_host) and not a.api_allow_plain_http:
        raise ConfigError(
            f"{args.config}: key 'alerts.api_host' = {a.api_host!r} is not loopback: set "
            "'alerts.api_tls_cert' and 'alerts.api_tls_key' for HTTPS, or "
            "'alerts.api_allow_plain_http = true' behind a TLS proxy (docs/operations.md)")
    for key in ("api_tls_cert", "api_tls_key"):
        path = getattr(a, key)
        if path is not None and not path.is_file():
            raise ConfigError(f"{args.config}: key 'alerts.{key}': no such file {path}")
    _, store = _store(args)
    registry = load_registry(settings.registry.path) if settings.registry.path.is_file() else None
    token = settings.sms.receipt_token.get_secret_value() if settings.sms.receipt_token else None
    options = ApiOptions(
        accounts=_accounts(settings, store), receipt_token=token, influx=settings.influx, registry=registry,
        rule_packs=load_rule_packs(a.rules_dir) if a.rules_dir else load_rule_packs(),
        trusted_proxies=tuple(a.api_trusted_proxies), photo_max_bytes=a.api_photo_max_bytes,
        photos_per_task=a.api_photos_per_task)
    app = build_app(store, a.teams, options=options)
    tls = {"ssl_certfile": str(a.api_tls_cert), "ssl_keyfile": str(a.api_tls_key)} if a.api_tls_cert else {}
    uvicorn.run(app, host=a.api_host, port=a.api_port, log_config=None,
                forwarded_allow_ips=",".join(a.api_trusted_proxies) or None, **tls)  # type: ignore[arg-type]
    return 0


def _user(args: argparse.Namespace) -> int:
    import secrets

    from alerts.accounts import AccountError, Role

    if args.user_action == "add":  # checked before the database is touched
        from weijian.contract import is_identifier

        for district in args.district:
            if not is_identifier(district):
                raise UsageError(f"--district {district!r}: must be 1-64 characters of [a-z0-9_-] "
                                 "starting with a letter or digit")
    settings, store = _store(args)
    accounts = _accounts(settings, store)
    try:
        if args.user_action == "list":
            for acc in accounts.list():
                state = "disabled" if acc.disabled else "enabled"
                print(f"{acc.username:<16} {acc.role.value:<10} {state:<8} {acc.team:<12} "
                      f"{','.join(acc.districts):<24} {acc.name} {acc.phone}")
            return 0
        if args.user_action in ("add", "reset"):
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else secrets.token_urlsafe(12)
            if args.user_action == "add":
                acc = accounts.add(args.username, name=args.name, phone=args.phone or "",
                                   team=args.team or "", districts=args.district, role=Role(args.role),
                                   password=password)
                print(f"account {acc.username} added ({acc.role.value}, "
                      f"districts {', '.join(acc.districts)})")
            else:
                accounts.reset(args.username, password)
                print(f"account {args.username}: password reset, unlocked, logged out everywhere")
            if not args.password_stdin:
                print(f"password: {password}")
            return 0
        acc = accounts.set_disabled(args.username, args.user_action == "disable")
        print(f"account {acc.username} {'disabled and logged out everywhere' if acc.disabled else 'enabled'}")
        return 0
    except AccountError as exc:
        raise UsageError(str(exc)) from exc


def _report_inputs(args: argparse.Namespace) -> Any:
    from alerts.statistics import days_period, month_period
    from alerts.store import Store
    from weijian.errors import ConfigError
    from weijian.registry import load_registry
    from weijian.rules import load_rule_packs

    settings = load_settings(args.config)
    try:
        if args.month is not None:
            if args.since or args.until:
                raise ValueError("give --month, or --from and --to, not both")
            period = month_period(args.month)
        elif args.since and args.until:
            period = days_period(args.since, args.until)
        else:
            raise ValueError("give --month YYYY-MM, or --from and --to (YYYY-MM-DD)")
    except ValueError as exc:
        raise UsageError(f"the period: {exc}") from exc
    registry = load_registry(settings.registry.path)
    if args.district is not None and args.district not in registry.districts:
        known = ", ".join(sorted(registry.districts))
        raise ConfigError(f"--district {args.district!r}: not a district of {settings.registry.path} "
                          f"(known: {known})")
    packs = load_rule_packs(settings.alerts.rules_dir) if settings.alerts.rules_dir else load_rule_packs()
    store = Store(settings.tasks.url, settings.alerts.db_timeout_s)
    return settings, period, registry, packs, store


def _compute(args: argparse.Namespace) -> Any:
    import asyncio

    from alerts.statistics import compute_report
    from weijian.errors import InfluxUnavailable

    settings, period, registry, packs, store = _report_inputs(args)

    def progress(text: str) -> None:
        print(f"report: {text}", file=sys.stderr, flush=True)

    try:
        report = asyncio.run(compute_report(settings.influx, store.engine, registry, packs, period,
                                            args.district, progress=progress))
    except InfluxUnavailable as exc:
        print(f"InfluxDB ({settings.influx.url}) is unavailable: {exc}", file=sys.stderr)
        return None, registry
    finally:
        store.close()
    if not any(d.received for d in report.devices) and not report.exceedances:
        where = f" in district {args.district}" if args.district else ""
        print(f"no readings and no alerts between {period.start:%Y-%m-%d %H:%M} and "
              f"{period.end:%Y-%m-%d %H:%M} UTC{where} (database {settings.influx.database!r} at "
              f"{settings.influx.url})", file=sys.stderr)
        return None, registry
    return report, registry


def _report_monthly(args: argparse.Namespace) -> int:
    from alerts.report import write_report

    report, registry = _compute(args)
    if report is None:
        return 1
    names = {d: registry.districts[d].name for d in registry.districts}
    units = {u: registry.units[u].name for u in registry.units}
    scope = names.get(args.district, "") if args.district else "全辖区"
    if args.month is not None:
        year, month = report.period.label.split("-")
        title = f"卫生监督在线监测月报（{scope}，{year}年{int(month)}月）"
    else:
        title = f"卫生监督在线监测统计报告（{scope}，{args.since} 至 {args.until}）"
    for path in write_report(report, args.out, names, title, units):
        print(path)
    if args.no_store:
        return 0
    if report.period.month is None:
        # report_monthly holds one point per month; another period's figures would overwrite it.
        print(f"report: the figures were not stored in InfluxDB (report_monthly holds whole calendar "
              f"months only; {args.since} to {args.until} is not one)", file=sys.stderr)
    else:
        _store_figures(args, report)
    return 0


def _store_figures(args: argparse.Namespace, report: Any) -> None:
    """The figures into InfluxDB (``report_monthly``) for the statistics dashboard."""
    import asyncio

    from alerts.report import FIGURES_MEASUREMENT, figure_lines
    from ingest.service import make_writer
    from weijian.errors import InfluxError

    settings = load_settings(args.config)
    lines = figure_lines(report)

    async def write() -> None:
        writer = make_writer(settings)
        try:
            await writer.write("\n".join(lines).encode())
        finally:
            await writer.aclose()

    try:
        asyncio.run(write())
    except InfluxError as exc:
        print(f"the figures were not stored in InfluxDB ({exc}); the files are complete", file=sys.stderr)
        return
    print(f"report: {len(lines)} figure points stored in InfluxDB measurement {FIGURES_MEASUREMENT}",
          file=sys.stderr)


def _report_risk(args: argparse.Namespace) -> int:
    _at_least("--top", args.top, 1)
    report, _ = _compute(args)
    if report is None:
        return 1
    print("risk   site               compliance completeness alerts on-time  name")
    for s in sorted(report.sites, key=lambda s: (-s.risk, s.site.id))[: args.top]:
        def pct(v: float | None) -> str:
            return "   -  " if v is None else f"{100 * v:6.1f}"
        print(f"{s.risk:5.1f}  {s.site.id:<18} {pct(s.compliance)}     {pct(s.completeness)}     "
              f"{s.alerts:>4}   {pct(s.tasks.on_time)}  {s.site.name}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``weijian tasks`` and ``weijian report`` and their actions."""
    from pathlib import Path

    report = subparsers.add_parser("report", help="the figures an institute reports: compliance, "
                                   "completeness, response (docs/reports.md)")
    rsub = report.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, what, handler in (
        ("monthly", "write the month's report as PDF, XLSX and CSV into --out; prints the files",
         _report_monthly),
        ("risk", "list the sites that should be inspected more (the risk score, highest first)",
         _report_risk),
    ):
        q = rsub.add_parser(name, help=what)
        q.add_argument("--month", help="YYYY-MM, a China-time month")
        q.add_argument("--from", dest="since", metavar="YYYY-MM-DD",
                       help="instead of --month: the first day of the period (China time)")
        q.add_argument("--to", dest="until", metavar="YYYY-MM-DD", help="the day after the period's last")
        q.add_argument("--district", help="only this district")
        if name == "monthly":
            q.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the files")
            q.add_argument("--no-store", action="store_true",
                           help="do not write the figures to InfluxDB (report_monthly, for Grafana; "
                           "only a whole calendar month's are ever written)")
        else:
            q.add_argument("--top", type=int, default=20, help="how many sites, 1 or more (default 20)")
        q.set_defaults(handler=handler)
        add_config_argument(q)
    tasks = subparsers.add_parser("tasks", help="inspection tasks (巡查核查任务), notifications, task API")
    sub = tasks.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="list tasks, newest first")
    p.add_argument("--district", action="append", help="only this district (repeatable)")
    p.add_argument("--status", choices=["open", "claimed", "resolved", "closed"])
    p.set_defaults(handler=_list)
    id_help = f"the task's id, 1 to {MAX_TASK_ID}"
    p = sub.add_parser("show", help="show one task with its audit trail (JSON); exit 1 if there is no "
                       "such task")
    p.add_argument("id", type=_task_id, help=id_help)
    p.set_defaults(handler=_show)
    p = sub.add_parser("claim", help="claim an open task; exit 1 if someone else has it or there is no "
                       "such task")
    p.add_argument("id", type=_task_id, help=id_help)
    p.add_argument("--assignee", required=True)
    p.set_defaults(handler=_claim)
    p = sub.add_parser("close", help="close a claimed task with a finding and evidence; exit 1 if it is not "
                       "claimed or there is no such task")
    p.add_argument("id", type=_task_id, help=id_help)
    p.add_argument("--finding", required=True)
    p.add_argument("--actor", required=True)
    p.add_argument("--photo", action="append", help="photo reference (repeatable)")
    p.add_argument("--gps", help="lat,lon in degrees (WGS 84), e.g. 30.1,117.2")
    p.add_argument("--on-site-min", type=float, help="minutes spent on site (0 or more)")
    p.set_defaults(handler=_close)
    p = sub.add_parser("notifications", help="the delivery log: who was told what, when, delivered or not")
    p.add_argument("--recipient")
    p.add_argument("--alert")
    p.add_argument("--limit", type=int, default=50, help="at most this many rows, newest first (default 50)")
    p.set_defaults(handler=_notifications)
    p = sub.add_parser("migrate", help="bring the alerts database to the newest schema, keeping its rows "
                       "(every service also does this when it starts)")
    p.add_argument("--wait", type=float, default=60.0, metavar="S",
                   help="how long to wait for another process's migration (default 60)")
    p.set_defaults(handler=_migrate)
    p = sub.add_parser("serve", help="serve the task API and the inspectors' web app (uvicorn; OpenAPI at "
                       "/docs, the app at /app/); HTTPS with [alerts] api_tls_cert and api_tls_key")
    p.set_defaults(handler=_serve)
    p = sub.add_parser("user", help="inspectors' accounts: add, disable, enable, reset, list")
    user = p.add_subparsers(dest="user_action", metavar="USER_ACTION", required=True)
    q = user.add_parser("add", help="add an account; prints a generated password unless --password-stdin")
    q.add_argument("username", help="1-64 characters of a-z 0-9 _ . -, starting with a letter or digit")
    q.add_argument("--name", required=True, help="the person's name (shown in the app)")
    q.add_argument("--phone", help="mobile number")
    q.add_argument("--team", help="the supervision team")
    q.add_argument("--district", action="append", required=True,
                   help="a district it works (repeatable; an identifier: a-z 0-9 _ -)")
    q.add_argument("--role", choices=["inspector", "duty_desk", "supervisor"], default="inspector")
    q.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    q.set_defaults(handler=_user)
    add_config_argument(q)
    for name, what in (("disable", "disable an account and revoke its tokens"),
                       ("enable", "enable it again"),
                       ("reset", "a new password (generated unless --password-stdin); unlocks, "
                                 "revokes tokens")):
        q = user.add_parser(name, help=what)
        q.add_argument("username")
        if name == "reset":
            q.add_argument("--password-stdin", action="store_true",
                           help="read the password from standard input")
        q.set_defaults(handler=_user)
        add_config_argument(q)
    q = user.add_parser("list", help="every account with its role, state and districts")
    q.set_defaults(handler=_user)
    add_config_argument(q)
    p = sub.add_parser("silence", help="maintenance windows (calibration, cleaning): alerts stay quiet")
    silence = p.add_subparsers(dest="silence_action", metavar="SILENCE_ACTION", required=True)
    q = silence.add_parser("add", help="record a maintenance window for a site, device or rule")
    q.add_argument("--site", required=True, help="site id from the registry")
    q.add_argument("--device", help="only this device of the site")
    q.add_argument("--rule", help="only this rule id")
    q.add_argument("--hours", type=float, required=True, help="length of the window")
    q.add_argument("--starts", help="ISO 8601 start with offset (default: now)")
    q.add_argument("--reason", required=True, help="why, e.g. 探头校准")
    q.add_argument("--by", required=True, help="who set it")
    q.set_defaults(handler=_silence_add)
    add_config_argument(q)
    q = silence.add_parser("list", help="current and scheduled windows (--all: ended ones too)")
    q.add_argument("--all", action="store_true")
    q.set_defaults(handler=_silence_list)
    add_config_argument(q)
    for name, action in sub.choices.items():
        if name not in ("silence", "user"):
            add_config_argument(action)
