"""``weijian dashboards build|push``: write provisioning files or upsert into a running Grafana."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from weijian.cli import add_config_argument
from weijian.config import Settings, load_settings

__all__ = ["register"]


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    update: dict[str, Any] = {}
    if getattr(args, "url", None):
        update["url"] = args.url
    if getattr(args, "token", None):
        update["token"] = SecretStr(args.token)
    if update:
        settings = settings.model_copy(update={"grafana": settings.grafana.model_copy(update=update)})
    return settings


def _boards(settings: Settings) -> list[dict[str, Any]]:
    from dashboards.boards import BoardOptions, build_all, to_json
    from weijian.registry import load_registry
    from weijian.rules import default_rule_packs

    registry = load_registry(settings.registry.path) if settings.registry.path.is_file() else None
    options = BoardOptions(settings.grafana.expected_interval_s, settings.grafana.silent_after_min, registry)
    return [to_json(b) for b in build_all(default_rule_packs(), options)]


def _build(args: argparse.Namespace) -> int:
    from dashboards.provisioning import write_provisioning

    settings = _settings(args)
    written = write_provisioning(args.out, settings, _boards(settings))
    print(f"{args.out}: wrote {len(written)} files")
    return 0


def _push(args: argparse.Namespace) -> int:
    from dashboards.push import push

    settings = _settings(args)
    report = push(settings, _boards(settings))
    print(f"{settings.grafana.url}: created {len(report.created)}, updated {len(report.updated)}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``dashboards build`` and ``dashboards push``."""
    parser = subparsers.add_parser("dashboards", help="Grafana dashboards for the duty desk")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="write dashboard JSON and Grafana provisioning files to --out")
    build.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    add_config_argument(build)
    build.set_defaults(handler=_build)
    push = sub.add_parser("push", help="upsert folder, data sources and dashboards through the HTTP API")
    push.add_argument("--url", help="Grafana URL (default: [grafana] url)")
    push.add_argument("--token", help="service-account token (default: [grafana] token)")
    add_config_argument(push)
    push.set_defaults(handler=_push)
