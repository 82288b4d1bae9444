"""``weijian gateway run``: the gateway's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from gateway.hj212_listener import LoggerTarget
from gateway.service import DevicePlan, plan_devices, plan_loggers, run_gateway
from weijian.cli import add_config_argument, settings_and_registry
from weijian.clock import Clock
from weijian.config import Settings
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
