"""``weijian dashboards build|push``: write provisioning files or upsert into a running Grafana."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from weijian.cli import add_config_argument
from weijian.config import ENV_PREFIX, Settings, load_settings
from weijian.errors import RegistryError
from weijian.registry import Registry, load_registry

__all__ = ["register"]

log = logging.getLogger(__name__)


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


def _registry(settings: Settings, config: Path | None) -> Registry | None:
    """The registry that restricts each limit's panel to the sites the limit applies to.

    A path that was configured (in the file or ``WEIJIAN_REGISTRY__PATH``) and is not there is
    a mistake, as it is for ingest; the default path, unset and absent, only costs the
    restriction, so it is a warning.

    Raises:
        RegistryError: the configured registry file is missing or invalid.
    """
    path = settings.registry.path
    if path.is_file():
        return load_registry(path)
    if "path" in settings.registry.model_fields_set:
        by_env = any(k.upper() == f"{ENV_PREFIX}REGISTRY__PATH" for k in os.environ)
        source = f"environment variable {ENV_PREFIX}REGISTRY__PATH" if by_env else str(config)
        raise RegistryError(
            f"{source}: [registry] path: no such file {path.resolve()} (the dashboards restrict "
            "each limit's panel to the registry's sites it applies to; point it at the site registry)")
    log.warning("dashboards.registry_missing", extra={
        "key": "[registry] path", "path": str(path.resolve()),
        "effect": "limit panels show every site of the kind, not only the sites each limit applies to",
    })
    return None


def _boards(settings: Settings, config: Path | None) -> list[dict[str, Any]]:
    from dashboards.boards import BoardOptions, build_all, to_json
    from weijian.rules import DEFAULT_RULES_DIR, load_rule_packs

    # The packs the alert engine judges with: ingest's alert stage loads this same folder.
    packs = load_rule_packs(settings.alerts.rules_dir or DEFAULT_RULES_DIR)
    registry = _registry(settings, config)
    options = BoardOptions(settings.grafana.expected_interval_s, settings.grafana.silent_after_min, registry)
    return [to_json(b) for b in build_all(packs, options)]


def _build(args: argparse.Namespace) -> int:
    from dashboards.provisioning import write_provisioning

    settings = _settings(args)
    written = write_provisioning(args.out, settings, _boards(settings, args.config))
    print(f"{args.out}: wrote {len(written)} files")
    return 0


def _push(args: argparse.Namespace) -> int:
    from dashboards.push import push

    settings = _settings(args)
    report = push(settings, _boards(settings, args.config))
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
