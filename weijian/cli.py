"""The ``weijian`` console script: one subcommand per stage.

Exit codes: 0 done, 2 bad usage or configuration (the message names the file, the key and
what is wrong), 1 anything else. Each stage adds its own subcommands through a
``register(subparsers)`` function in its ``cli`` module; the imports stay lazy so that
``weijian --help`` is fast and a broken optional stage cannot break the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from weijian import __version__
from weijian.config import Settings, load_settings
from weijian.errors import UsageError
from weijian.logs import configure_logging
from weijian.parent_death import die_with_parent_if_asked
from weijian.redact import mask_tree
from weijian.registry import Registry, load_registry, mosquitto_acl

__all__ = ["Command", "add_config_argument", "checking_config", "main", "settings_and_registry"]

log = logging.getLogger(__name__)

# A subcommand's handler receives the parsed arguments and returns the exit code.
Command = Callable[[argparse.Namespace], int]

# Stage modules that add subcommands, in the order of the data flow.
_STAGES = (
    "firmware_sim.cli",
    "gateway.cli",
    "ingest.cli",
    "alerts.cli",
    "dashboards.cli",
    "weijian.demo.cli",
)


def add_config_argument(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """Add the ``--config PATH`` option every program takes."""
    parser.add_argument(
        "--config",
        type=Path,
        required=required,
        metavar="PATH",
        help="TOML configuration file; every key can be overridden by WEIJIAN_<SECTION>__<KEY>",
    )


def checking_config(handler: Command) -> Command:
    """``handler`` for a program that reads no settings: ``--config`` is checked all the same.

    Every program takes ``--config PATH`` (the contract); for one with nothing to read there
    (the simulators, the demo), a bad file or environment override still exits 2, naming the key.
    """

    def run(args: argparse.Namespace) -> int:
        load_settings(args.config)
        return handler(args)

    return run


def settings_and_registry(args: argparse.Namespace) -> tuple[Settings, Registry]:
    """Load the configuration named by ``--config`` and the registry it points to."""
    settings = load_settings(args.config)
    return settings, load_registry(settings.registry.path)


def _registry_check(args: argparse.Namespace) -> int:
    if args.path is not None:
        registry = load_registry(args.path)
    else:
        _, registry = settings_and_registry(args)
    n_devices = sum(1 for _ in registry.devices())
    print(
        f"{registry.path}: ok: {len(registry.districts)} districts, {len(registry.units)} units, "
        f"{len(registry.sites)} sites, {n_devices} devices, {len(registry.gateways)} gateways"
    )
    return 0


def _registry_acl(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    registry = load_registry(args.path if args.path is not None else settings.registry.path)
    print(mosquitto_acl(registry, settings.mqtt.topic_root, args.ingest_user), end="")
    return 0


def _config_show(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    # Secret keys and credentials inside URLs (tasks url, robot keys, tokens) are masked.
    print(json.dumps(mask_tree(settings.model_dump(mode="json")), indent=2, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every installed stage's subcommands."""
    parser = argparse.ArgumentParser(
        prog="weijian",
        description="weijian (卫监): real-time online monitoring for public-health supervision.",
    )
    parser.add_argument("--version", action="version", version=f"weijian {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the JSON-lines log on stderr (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    reg = sub.add_parser("registry", help="work with the site registry")
    reg_sub = reg.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = reg_sub.add_parser(
        "check", help="load and cross-check a registry file; exit 2 naming every problem"
    )
    check.add_argument("path", nargs="?", type=Path, help="registry TOML (default: [registry] path)")
    add_config_argument(check)
    check.set_defaults(handler=_registry_check)

    acl = reg_sub.add_parser(
        "acl", help="print a Mosquitto ACL file: each gateway may write only its own devices' topics"
    )
    acl.add_argument("path", nargs="?", type=Path, help="registry TOML (default: [registry] path)")
    acl.add_argument("--ingest-user", default="ingest", help="MQTT user name of ingest")
    add_config_argument(acl)
    acl.set_defaults(handler=_registry_acl)

    cfg = sub.add_parser("config", help="work with configuration files")
    cfg_sub = cfg.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = cfg_sub.add_parser(
        "show", help="print the effective settings (file plus environment), secrets hidden"
    )
    add_config_argument(show)
    show.set_defaults(handler=_config_show)

    for name in _STAGES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the stage exists but something it needs is missing
                raise
            continue
        register: Callable[[Any], None] = module.register
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    die_with_parent_if_asked()
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    handler: Command = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        print(f"weijian: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # SIGINT where no handler of the command's own turns it into a clean stop (the long
        # runners do, and exit 0). Interrupted is not done, and the contract's codes are
        # 0, 2 and 1 only: not the shell's 128 + SIGINT.
        log.warning("command.interrupted", extra={"command": args.command})
        return 1
    except Exception:
        log.exception("command.failed", extra={"command": args.command})
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
