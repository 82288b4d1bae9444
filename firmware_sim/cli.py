"""The ``weijian sim`` subcommands: run a scenario, list bundled scenarios and profiles."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware_sim.scenario import Scenario, list_scenarios, load_scenario
from firmware_sim.service import run_scenario
from weijian.cli import add_config_argument, checking_config
from weijian.device_profile import list_profiles, load_profile
from weijian.errors import UsageError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``sim run`` and ``sim list`` to the ``weijian`` command line."""
    sim = subparsers.add_parser("sim", help="simulated Modbus instruments (firmware_sim)")
    sim_sub = sim.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sim_sub.add_parser(
        "run",
        help="serve a scenario's devices on Modbus TCP ports and RTU pseudo-terminals "
        "until SIGINT/SIGTERM; prints which address serves which device",
    )
    run.add_argument(
        "--scenario",
        required=True,
        metavar="FILE",
        help="scenario TOML file, or the name of a bundled one (see 'weijian sim list')",
    )
    run.add_argument(
        "--speed",
        type=float,
        metavar="X",
        help="simulated seconds per second (default: the scenario's; 1440 = a day a minute)",
    )
    run.add_argument("--seed", type=int, metavar="N", help="random seed (default: the scenario's)")
    run.add_argument(
        "--start-offset-h",
        type=float,
        default=0.0,
        metavar="H",
        help="begin this many simulated hours into the scenario",
    )
    run.add_argument(
        "--start",
        type=datetime.fromisoformat,
        metavar="ISO",
        help="simulated start time with an offset (default: the scenario's start), "
        "e.g. 2026-11-23T00:00:00+08:00",
    )
    run.add_argument(
        "--endpoints-json",
        type=Path,
        metavar="PATH",
        help="also write the endpoints as JSON to PATH once serving (for other programs)",
    )
    add_config_argument(run)
    run.set_defaults(handler=checking_config(_run))
    listing = sim_sub.add_parser("list", help="list bundled scenarios and device profiles")
    add_config_argument(listing)
    listing.set_defaults(handler=checking_config(_list))
    _register_hj212(sim_sub)


def _register_hj212(sim_sub: Any) -> None:
    hj = sim_sub.add_parser(
        "hj212",
        help="one simulated HJ 212 data logger pushing to a platform (a gateway's listener)",
        description=(
            "Connect to HOST:PORT as an HJ 212 data logger and upload real-time data: --count packets "
            "stamped by the logger's clock, --every seconds apart; or, with --hours, that span of "
            "simulated time from --start (real-time, minute, hour and day data) as fast as the 9014s "
            "come. Host commands (1012, 1062, 1064, 1000, 1011, 1061, 1063) are answered and applied. "
            "Prints a JSON summary; exit 0 when every upload was answered 9014, 1 otherwise."
        ),
    )
    hj.add_argument("--host", default="127.0.0.1")
    hj.add_argument("--port", type=int, required=True)
    hj.add_argument("--mn", required=True, help="the logger's MN")
    hj.add_argument("--password", default="123456", help="its PW (default 123456)")
    hj.add_argument("--edition", choices=["2005", "2017", "2025"], default="2017")
    hj.add_argument("--key", metavar="HEX", help="SM4 key, 32 hex characters: encrypt CP of uploads")
    hj.add_argument("--count", type=int, default=10, help="live mode: real-time packets to send (default 10)")
    hj.add_argument("--every", type=float, default=1.0, metavar="S", help="live mode: seconds apart")
    hj.add_argument("--hours", type=float, metavar="H", help="span mode: simulated hours to upload")
    hj.add_argument("--start", type=datetime.fromisoformat, metavar="ISO",
                    help="span mode: the first data time (default: H hours ago)")
    hj.add_argument("--rtd-interval", type=int, default=30, metavar="S", help="real-time interval (s)")
    hj.add_argument("--clock-offset", type=float, default=0.0, metavar="S",
                    help="the logger's clock is S seconds off until the platform sets it (1012)")
    hj.add_argument("--bad-crc", type=float, default=0.0, metavar="P",
                    help="share of packets first sent with a bad CRC")
    hj.add_argument("--retry", type=float, default=0.0, metavar="P",
                    help="share of packets sent twice (same QN)")
    hj.add_argument("--flags", type=float, default=0.0, metavar="P",
                    help="share of values flagged other than N")
    hj.add_argument("--split", action="store_true", help="write every packet in pieces (TCP segments)")
    hj.add_argument("--join", action="store_true", help="write a tick's packets together")
    hj.add_argument("--seed", type=int, default=0)
    add_config_argument(hj)
    hj.set_defaults(handler=checking_config(_hj212))


def _hj212(args: argparse.Namespace) -> int:
    from firmware_sim.hj212_logger import Faults, LoggerSpec, SimulatedLogger
    from gateway import hj212

    try:
        key = bytes.fromhex(args.key) if args.key else None
    except ValueError:
        key = b""
    if key is not None and len(key) != 16:
        raise UsageError(f"--key {args.key!r}: must be 32 hex characters (a 16-byte SM4 key)")
    if not 30 <= args.rtd_interval <= 3600:
        raise UsageError(f"--rtd-interval {args.rtd_interval}: must be 30-3600 seconds")
    edition = {"2005": hj212.Edition.HJ212_2005, "2017": hj212.Edition.HJ212_2017,
               "2025": hj212.Edition.HJ212_2025}[args.edition]
    spec = LoggerSpec(mn=args.mn, password=args.password, edition=edition, key=key,
                      rtd_interval_s=args.rtd_interval, clock_offset_s=args.clock_offset,
                      faults=Faults(bad_crc=args.bad_crc, retry=args.retry, flags=args.flags,
                                    split=args.split, join=args.join))
    logger = SimulatedLogger(spec, seed=args.seed)

    async def go() -> None:
        if args.hours is None:
            await logger.send_live(args.host, args.port, args.count, every_s=args.every)
            return
        start = args.start or datetime.now(UTC) - timedelta(hours=args.hours)
        if start.tzinfo is None:
            raise UsageError(f"--start {args.start}: give an offset, e.g. +08:00")
        start = start.astimezone(UTC).replace(second=0, microsecond=0)
        await logger.run_span(args.host, args.port, start, start + timedelta(hours=args.hours))

    try:
        asyncio.run(go())
    except OSError as exc:
        print(f"{args.host}:{args.port}: cannot reach the platform ({exc})", file=sys.stderr)
        return 1
    answered = sum(1 for u in logger.sent if u.qn in logger.acked)
    print(json.dumps({
        "mn": spec.mn, "uploads": len(logger.sent), "answered_9014": answered,
        "refused": {str(k): v for k, v in logger.refusals.items()}, "wire_packets": logger.wire_packets,
        "commands": [{"cn": cn, "cp": cp} for cn, cp in logger.commands],
        "clock_offset_s": round(logger.clock_offset_s, 3),
    }, ensure_ascii=False, indent=2))
    return 0 if answered == len(logger.sent) else 1


def _list(args: argparse.Namespace) -> int:
    print("scenarios:")
    for name in list_scenarios():
        print(f"  {name:<28} {load_scenario(name).description}")
    print("profiles:")
    for name in list_profiles():
        profile = load_profile(name)
        print(f"  {name:<28} {profile.kind.value:<16} {profile.vendor}")
    return 0


def _run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    if args.speed is not None and args.speed < 0:
        raise UsageError(f"--speed: must be >= 0, got {args.speed}")
    if args.start is not None:
        if args.start.tzinfo is None:
            raise UsageError(f"--start: needs an offset such as +08:00, got {args.start.isoformat()}")
        scenario = scenario.starting_at(args.start)
    asyncio.run(_serve(scenario, args.speed, args.seed, args.start_offset_h, args.endpoints_json))
    return 0


async def _serve(
    scenario: Scenario,
    speed: float | None,
    seed: int | None,
    offset_h: float,
    endpoints_json: Path | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with run_scenario(scenario, speed=speed, seed=seed, start_offset_h=offset_h) as sim:
            print(
                f"scenario {scenario.name}: {len(sim.endpoints)} devices, "
                f"speed {sim.clock.speed:g}x, seed {sim.seed}, "
                f"starting {scenario.start.isoformat()}",
                flush=True,
            )
            for endpoint in sim.endpoints:
                print(endpoint.describe(), flush=True)
            if endpoints_json is not None:
                data = {
                    # The simulated clock as origin + (wall - anchor) * speed, so that other
                    # processes can run the same clock (weijian.clock.ClockSettings).
                    "clock": {
                        "origin": datetime.fromtimestamp(sim.clock.now(), UTC).isoformat(),
                        "anchor": datetime.now(UTC).isoformat(),
                        "speed": sim.clock.speed,
                    },
                    "endpoints": [
                        dataclasses.asdict(e) | {"transport": e.transport.value} for e in sim.endpoints
                    ],
                }
                tmp = endpoints_json.with_suffix(".tmp")
                tmp.write_text(json.dumps(data, indent=2))
                tmp.replace(endpoints_json)  # readers never see half a file
            print("ready; stop with Ctrl-C or SIGTERM", flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("stopped", flush=True)
