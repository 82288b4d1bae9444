"""``weijian demo``'s command line; the demo itself (and ``rich``) is loaded only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from weijian.cli import add_config_argument, checking_config
from weijian.errors import UsageError

__all__ = ["register"]

_EXAMPLE_REGISTRY = Path(__file__).resolve().parents[2] / "examples" / "registry.toml"


def _run(args: argparse.Namespace) -> int:
    try:
        from weijian.demo.run import run_demo
    except ImportError as exc:
        raise UsageError(
            f"weijian demo needs the demo extra ({exc.name} is not installed): pip install 'weijian[demo]'"
        ) from exc
    return run_demo(args)


def register(sub: Any) -> None:
    """Add ``weijian demo``."""
    parser = sub.add_parser(
        "demo", help="run the whole pipeline on this machine: sensors to SMS, in about a minute"
    )
    parser.add_argument("--duration", type=float, default=60.0, metavar="S",
                        help="wall-clock seconds to run (default 60: a simulated day at 1440x)")
    parser.add_argument("--speed", type=float, default=1440.0, metavar="X",
                        help="simulated seconds per second (default 1440)")
    parser.add_argument("--scenario", default="demo-city", metavar="NAME|FILE",
                        help="firmware_sim scenario (default demo-city: one incident per kind)")
    parser.add_argument("--keep", action="store_true",
                        help="leave Mosquitto and InfluxDB running afterwards and say how to stop them")
    parser.add_argument("--workdir", type=Path, metavar="DIR",
                        help="where data and logs go (default ./demo-data/<time>)")
    parser.add_argument("--registry", type=Path, default=_EXAMPLE_REGISTRY,
                        help="site registry TOML (default: examples/registry.toml)")
    add_config_argument(parser)
    parser.set_defaults(handler=checking_config(_run))
