"""``weijian tasks ...``: list, show, claim and close tasks; the delivery log; the API server."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from weijian.cli import add_config_argument
from weijian.config import load_settings
from weijian.errors import UsageError

__all__ = ["register"]


def _store(args: argparse.Namespace) -> Any:
    from alerts.store import Store

    settings = load_settings(args.config)
    return settings, Store(settings.tasks.url, settings.alerts.db_timeout_s)


def _print(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


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
        raise UsageError(f"no task {args.id}")
    _print(task)
    return 0


def _claim(args: argparse.Namespace) -> int:
    _, store = _store(args)
    if not store.claim(args.id, args.assignee, datetime.now(UTC)):
        print(f"task {args.id} is not open (already claimed, closed or unknown)")
        return 1
    print(f"task {args.id} claimed by {args.assignee}")
    return 0


def _close(args: argparse.Namespace) -> int:
    _, store = _store(args)
    evidence: dict[str, Any] = {"photos": args.photo or []}
    if args.gps:
        lat, _, lon = args.gps.partition(",")
        evidence["gps"] = [float(lat), float(lon)]
    if args.on_site_min is not None:
        evidence["on_site_min"] = args.on_site_min
    if not store.close_task(args.id, args.actor, args.finding, evidence, datetime.now(UTC)):
        print(f"task {args.id} is not claimed (claim it first) or already closed")
        return 1
    print(f"task {args.id} closed")
    return 0


def _notifications(args: argparse.Namespace) -> int:
    _, store = _store(args)
    for d in store.deliveries(recipient=args.recipient, alert_id=args.alert, limit=args.limit):
        print(f"{d['created_at']:%Y-%m-%d %H:%M:%S} {d['status']:<9} {d['channel']:<8} {d['recipient']:<12} "
              f"tries {d['attempts']:<3} {d['last_error'] or '':<16} {d['payload'].get('text', '')}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from alerts.api import build_app

    settings, store = _store(args)
    app = build_app(store, settings.alerts.teams)
    uvicorn.run(app, host=settings.alerts.api_host, port=settings.alerts.api_port, log_config=None)
    return 0


def register(subparsers: Any) -> None:
    """Add ``weijian tasks`` and its actions."""
    tasks = subparsers.add_parser("tasks", help="inspection tasks (巡查核查任务), notifications, task API")
    sub = tasks.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="list tasks, newest first")
    p.add_argument("--district", action="append", help="only this district (repeatable)")
    p.add_argument("--status", choices=["open", "claimed", "resolved", "closed"])
    p.set_defaults(handler=_list)
    p = sub.add_parser("show", help="show one task with its audit trail (JSON)")
    p.add_argument("id", type=int)
    p.set_defaults(handler=_show)
    p = sub.add_parser("claim", help="claim an open task; exit 1 if someone else has it")
    p.add_argument("id", type=int)
    p.add_argument("--assignee", required=True)
    p.set_defaults(handler=_claim)
    p = sub.add_parser("close", help="close a claimed task with a finding and evidence")
    p.add_argument("id", type=int)
    p.add_argument("--finding", required=True)
    p.add_argument("--actor", required=True)
    p.add_argument("--photo", action="append", help="photo reference (repeatable)")
    p.add_argument("--gps", help="lat,lon")
    p.add_argument("--on-site-min", type=float, help="minutes spent on site")
    p.set_defaults(handler=_close)
    p = sub.add_parser("notifications", help="the delivery log: who was told what, when, delivered or not")
    p.add_argument("--recipient")
    p.add_argument("--alert")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(handler=_notifications)
    p = sub.add_parser("serve", help="serve the task HTTP JSON API (uvicorn; OpenAPI at /docs)")
    p.set_defaults(handler=_serve)
    for action in sub.choices.values():
        add_config_argument(action)
