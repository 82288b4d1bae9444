"""``weijian gateway run``: the gateway's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from gateway import hj212
from gateway.hj212_commands import NAMED, china_time
from gateway.hj212_control import ask, cp_problem, socket_path
from gateway.hj212_listener import LoggerTarget
from gateway.service import DevicePlan, plan_devices, plan_loggers, run_gateway
from weijian.cli import add_config_argument, settings_and_registry
from weijian.clock import Clock
from weijian.config import Settings, load_settings
from weijian.errors import ConfigError

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add ``gateway run`` to the ``weijian`` command line."""
    parser = subparsers.add_parser(
        "gateway", help="edge gateway: poll Modbus devices, spool readings, publish to MQTT"
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sub.add_parser(
        "run",
        help="poll the configured devices and publish every reading until SIGTERM",
        description=(
            "Poll the devices of [gateway] over Modbus TCP/RTU, store each reading in the "
            "on-disk spool, publish it to MQTT (QoS 1) and delete it on PUBACK. SIGTERM or "
            "SIGINT stops polling, publishes what is queued (up to drain_timeout_s) and exits 0."
        ),
    )
    add_config_argument(run, required=True)
    run.set_defaults(handler=_run)
    _register_hj212(sub)


def _register_hj212(sub: Any) -> None:
    hj = sub.add_parser(
        "hj212",
        help="talk to the HJ 212 data loggers connected to a running gateway",
        description=(
            "Through the running gateway's control socket (<spool file>.hj212.sock, mode 0600): "
            "list the loggers and their connections, or send a logger a host command and print "
            "its answer (9011 QnRtn, the values it reports, 9012 ExeRtn) as JSON. Exit 0 when the "
            "logger carried the command out, 1 when it refused, failed, did not answer or is not "
            "connected, 2 for bad usage."
        ),
    )
    actions = hj.add_subparsers(dest="hj212_action", metavar="ACTION", required=True)
    status = actions.add_parser("status",
                                help="the configured loggers, connected or not, and recent commands")
    add_config_argument(status, required=True)
    status.set_defaults(handler=_hj212_status)
    commands = "; ".join(f"{name} {' '.join(c.params)}".strip() + f": {c.summary}"
                         for name, c in NAMED.items())
    send = actions.add_parser(
        "send", help="send a logger a host command and print its answer",
        description=f"COMMAND is one of: {commands}; or a four-digit CN followed by NAME=VALUE CP fields.",
    )
    add_config_argument(send, required=True)
    send.add_argument("mn", metavar="MN", help="the logger's MN, as in [[gateway.hj212.loggers]]")
    send.add_argument("command", metavar="COMMAND", help="a command name above, or a CN")
    send.add_argument("values", metavar="VALUE", nargs="*", help="the command's values")
    send.add_argument("--timeout", type=float, default=60.0, metavar="S",
                      help="give up waiting for the gateway after S seconds (default 60)")
    send.set_defaults(handler=_hj212_send)


def _control(args: argparse.Namespace) -> Any:
    settings = load_settings(args.config)
    return settings, socket_path(settings.gateway.spool.path, settings.gateway.hj212.control_socket)


def _cp(command: str, values: list[str]) -> tuple[str, dict[str, str]]:
    """The CN and CP fields of an operator's command; ConfigError names what is wrong."""
    named = NAMED.get(command)
    if named is None:
        if not (len(command) == 4 and _is_number(command)):
            raise ConfigError(f"command {command!r}: not one of {', '.join(NAMED)} nor a four-digit CN")
        fields = {}
        for value in values:
            name, sep, text = value.partition("=")
            if not sep or not name:
                raise ConfigError(f"CP field {value!r} is not NAME=VALUE")
            fields[name] = text
        # The gateway refuses these too, but they are the operator's mistake: exit 2, not 1.
        problem = cp_problem(fields)
        if problem is not None:
            raise ConfigError(f"command {command!r}: {problem}")
        return command, fields
    if command == "set-clock" and not values:
        values = [china_time(datetime.now(UTC))]
    if len(values) != len(named.params):
        want = " ".join(named.params) or "no values"
        raise ConfigError(f"command {command!r} takes {want}, got {len(values)} value(s)")
    for name, value in zip(named.params, values, strict=True):
        if name != "SystemTime" and not _is_number(value):
            raise ConfigError(f"command {command!r}: {name} must be a whole number, got {value!r}")
        if name == "SystemTime" and not _is_time(value):
            raise ConfigError(
                f"command {command!r}: SystemTime is YYYYMMDDhhmmss (China time), got {value!r}")
    return named.cn, dict(zip(named.params, values, strict=True))


def _is_number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes other scripts' digits)."""
    return text.isascii() and text.isdigit()


def _is_time(text: str) -> bool:
    """``YYYYMMDDhhmmss`` that names a real moment (not month 13, not hour 25)."""
    if len(text) != 14 or not _is_number(text):
        return False
    try:
        hj212.parse_time(text)
    except ValueError:
        return False
    return True


def _print(answer: dict[str, Any]) -> None:
    print(json.dumps(answer, ensure_ascii=False, indent=2))


def _hj212_status(args: argparse.Namespace) -> int:
    _, path = _control(args)
    try:
        answer = asyncio.run(ask(path, {"op": "status"}, 10.0))
    except (OSError, TimeoutError) as exc:
        print(f"{path}: no running gateway answers there ({exc})", file=sys.stderr)
        return 1
    _print(answer)
    return 0


def _hj212_send(args: argparse.Namespace) -> int:
    settings, path = _control(args)
    cn, cp = _cp(args.command, args.values)
    if args.mn not in {c.mn for c in settings.gateway.hj212.loggers}:
        raise ConfigError(f"{args.config}: MN {args.mn!r} is not in key 'gateway.hj212.loggers'")
    try:
        answer = asyncio.run(ask(path, {"op": "send", "mn": args.mn, "cn": cn, "cp": cp}, args.timeout))
    except (OSError, TimeoutError) as exc:
        print(f"{path}: no running gateway answers there ({exc or 'timed out'})", file=sys.stderr)
        return 1
    _print(answer)
    return 0 if answer.get("ok") else 1


def _run(args: argparse.Namespace) -> int:
    settings, registry = settings_and_registry(args)
    try:
        plans = plan_devices(settings, registry)
        loggers = plan_loggers(settings, registry)
    except ConfigError as exc:
        raise ConfigError(f"{args.config}: {exc}") from exc
    try:
        asyncio.run(_serve(settings, plans, loggers))
    except ConfigError as exc:
        raise ConfigError(f"{args.config}: {exc}") from exc
    return 0


async def _serve(settings: Settings, plans: list[DevicePlan], loggers: dict[str, LoggerTarget]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # [clock]: wall time, or the replayed time every process of a demo replay shares.
    await run_gateway(settings, plans, stop, now=Clock(settings.clock).now, loggers=loggers)
