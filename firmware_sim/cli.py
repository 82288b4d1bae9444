"""The ``weijian sim`` subcommands: run a scenario, list bundled scenarios and profiles."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware_sim.scenario import Scenario, list_scenarios, load_scenario
from firmware_sim.service import run_scenario
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
    run.set_defaults(handler=_run)
    listing = sim_sub.add_parser("list", help="list bundled scenarios and device profiles")
    listing.set_defaults(handler=_list)


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
