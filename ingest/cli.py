"""``weijian ingest run`` and ``weijian ingest quarantine``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from typing import Any

from weijian.cli import add_config_argument, settings_and_registry
from weijian.config import load_settings
from weijian.errors import UsageError

__all__ = ["register"]

_SWITCH_INTERVAL_S = 0.0005
_GC_YOUNG = 50_000  # allocations between young-generation collections (CPython's default: 700)


async def _serve(args: argparse.Namespace) -> None:
    from ingest.service import IngestService

    settings, registry = settings_and_registry(args)
    service = IngestService(settings, registry)
    # Everything built so far (modules, registry, rule packs) lives as long as the process:
    # move it out of the collector's sight, and collect the young generation less often.
    # Each batch allocates tens of thousands of short-lived objects, and with the default
    # threshold (700) the collector ran every few dozen messages.
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG, 20, 100)
    # Database drivers and the outbox run in threads; each of their round trips needs the GIL
    # back from the loop thread, which parses readings for whole batches. At CPython's 5 ms
    # switch interval a transaction of a dozen round trips could wait tens of ms for it.
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.run(stop)


def _run(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_serve(args))
    except BaseExceptionGroup as group:
        usage = group.subgroup(lambda e: isinstance(e, UsageError))
        while isinstance(usage, BaseExceptionGroup):  # a stage's configuration fault: exit 2
            usage = usage.exceptions[0]
        if usage is not None:
            raise usage from group
        raise
    return 0


def _quarantine(args: argparse.Namespace) -> int:
    from ingest.quarantine import QuarantineStore

    settings = load_settings(args.config)
    store = QuarantineStore(settings.ingest.quarantine_path)
    try:
        counts = store.counts()
        rows = store.list(reason=args.reason, limit=args.limit)
    finally:
        store.close()
    print("reason counts: " + (", ".join(f"{r}={n}" for r, n in sorted(counts.items())) or "none"))
    for row in rows:
        prefix = row.payload[:80].decode("utf-8", "replace").replace("\n", " ")
        print(
            f"{row.id}\t{row.received_at}\t{row.reason}\t{row.field}\t{row.topic[:120]}\t"
            f"{row.detail[:200]}\t{len(row.payload)} bytes: {prefix}"
        )
    return 0


def register(subparsers: Any) -> None:
    """Add ``ingest run`` and ``ingest quarantine`` to the ``weijian`` command."""
    parser = subparsers.add_parser("ingest", help="central intake: MQTT readings to InfluxDB, feed alerts")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sub.add_parser(
        "run", help="run the ingest service until SIGTERM (validate, dedup, store, hand off, then ack)"
    )
    add_config_argument(run)
    run.set_defaults(handler=_run)
    quarantine = sub.add_parser(
        "quarantine", help="list refused messages, newest first, with counts by reason"
    )
    add_config_argument(quarantine)
    quarantine.add_argument("--reason", help="only this reason (e.g. wrong_unit, unknown_device)")
    quarantine.add_argument("--limit", type=int, default=50, help="at most this many entries (default 50)")
    quarantine.set_defaults(handler=_quarantine)
