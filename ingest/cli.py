"""``weijian ingest run`` and ``weijian ingest quarantine``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
import threading
import unicodedata
from collections.abc import Callable
from typing import Any, TypeVar

from weijian.cli import add_config_argument
from weijian.config import load_settings
from weijian.errors import UsageError
from weijian.registry import load_registry

__all__ = ["register"]

_T = TypeVar("_T")

_SWITCH_INTERVAL_S = 0.0005
_GC_YOUNG = 50_000  # allocations between young-generation collections (CPython's default: 700)
# Unicode categories shown as escapes: controls (C0, DEL, C1), format characters (bidi
# overrides, zero-width ones) and the line and paragraph separators that split lines too.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _one_line(text: str) -> str:
    r"""``text`` with control, format and line-separator characters escaped (``\n``, ``\x1b``).

    ``ingest quarantine`` prints one tab-separated entry per line, and a quarantined topic,
    detail or payload may hold anything: InfluxDB's error text ends in a newline, and a
    hostile payload can carry tabs, carriage returns, terminal escapes or U+2028.
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:  # \t -> "\\t", ESC -> "\\x1b", ...
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def _positive_int(value: str) -> int:
    """Parse ``--limit``: a whole number of at least 1 (argparse exits 2 naming the option)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {value!r}")
    return number


async def _in_daemon_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in a daemon thread, off the event loop.

    Not on asyncio's executor, whose threads the interpreter waits for at exit: Ctrl-C while
    a registry read hangs (a stalled network mount) would not end the process.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if done.done():
            return  # cancelled meanwhile
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (Ctrl-C): nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=f"load-{getattr(fn, '__name__', 'work')}", daemon=True).start()
    return await done


async def _serve(args: argparse.Namespace) -> None:
    from ingest.service import IngestService, early_coordinator

    settings = load_settings(args.config)
    settings.check_ingest_run()  # before the registry: a configuration fault is named first
    # Connect to the cluster's database first: the wait before claiming (so that processes
    # started together count each other) then passes while the registry and rule packs load.
    coordinator = early_coordinator(settings)
    if coordinator is not None:
        coordinator.start_joining()
    try:
        registry = await _in_daemon_thread(load_registry, settings.registry.path)
        service = IngestService(settings, registry, coordinator=coordinator)
    except BaseException:
        if coordinator is not None:
            await coordinator.close()
        raise
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
        prefix = row.payload[:80].decode("utf-8", "replace")
        columns = (row.id, row.received_at, row.reason, row.field, row.topic[:120], row.detail[:200].rstrip(),
                   f"{len(row.payload)} bytes: {prefix}")
        print("\t".join(_one_line(str(column)) for column in columns))
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
    quarantine.add_argument("--limit", type=_positive_int, default=50,
                            help="at most this many entries, at least 1 (default 50)")
    quarantine.set_defaults(handler=_quarantine)
