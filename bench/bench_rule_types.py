"""Benchmark: the pure engine's ``step()`` with the rule types of issue 13 active, by device count.

Devices are spread over the four kinds (a quarter each). Each device gets every rule of its
kind's pack that applies to it, **all enabled** (the ones that ship disabled too: the
completeness rules, the advisory and C-grade ones), so every new type is evaluated: cumulative
(cold chain, 30-day window), equipment_off (pools), not_emptied dwell (waste), completeness
(every kind, counting each reading per day and judged at each day's end by the ticks). The
readings are normal except that fridges run a 10-minute excursion to 11 °C in every 4 hours
(so cumulative rules keep spans), and one tick is stepped per simulated minute.

Compared with the same devices given only the types that existed before (range, rate of
change, data interruption, device fault, door, power, not_emptied). Reports readings/s (ticks
included in the time) and the engine's memory for the cumulative and completeness state.

Run: ``.venv/bin/python bench/bench_rule_types.py [--devices 12,1000,10000] [--minutes 60]``
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.engine import DeviceInfo, EngineConfig, EngineState, Tick, step  # noqa: E402
from weijian.contract import CATALOGUE, Kind, MetricValue, Reading  # noqa: E402
from weijian.rules import RuleType, default_rule_packs  # noqa: E402

NEW_TYPES = {RuleType.CUMULATIVE, RuleType.EQUIPMENT_OFF, RuleType.COMPLETENESS}
METRICS = {
    Kind.DRINKING_WATER: {"free_chlorine": 0.5, "turbidity": 0.3, "ph": 7.3, "conductivity": 400.0,
                          "temperature": 15.0},
    Kind.SWIMMING_POOL: {"free_chlorine": 0.5, "combined_chlorine": 0.2, "ph": 7.3, "turbidity": 0.3,
                         "orp": 700.0, "temperature": 27.0, "circulation_on": 1.0, "disinfection_on": 1.0},
    Kind.MEDICAL_WASTE: {"temperature": 15.0, "humidity": 55.0, "door_open": 0.0, "weight": 3.0},
    Kind.COLD_CHAIN: {"temperature": 5.0, "door_open": 0.0, "power_ok": 1.0},
}
KINDS = list(METRICS)
T0 = datetime(2026, 7, 14, 16, 0, tzinfo=UTC)


def config(n: int, *, new_types: bool) -> EngineConfig:
    packs = default_rule_packs()
    devices = {}
    for i in range(n):
        kind = KINDS[i % 4]
        rules = tuple(r.model_copy(update={"enabled": True}) for r in packs[kind].rules
                      if (new_types or r.type not in NEW_TYPES)
                      and (r.metric is None or r.metric in METRICS[kind])
                      and r.applies_to.water_point in (None, "tap")
                      and r.applies_to.small_supply in (None, False)
                      and r.applies_to.storage in (None, "refrigerated"))
        devices[(f"site-{i}", "dev-1")] = DeviceInfo(f"site-{i}", "dev-1", kind, "d1", f"gw-{i // 20}", rules)
    return EngineConfig(devices=devices)


def readings(n: int, minute: int) -> list[Reading]:
    at = T0 + timedelta(minutes=minute)
    hot = minute % 240 < 10
    out = []
    for i in range(n):
        kind = KINDS[i % 4]
        values = dict(METRICS[kind])
        if kind is Kind.COLD_CHAIN and hot:
            values["temperature"] = 11.0
        metrics = {m: MetricValue(value=v, unit=CATALOGUE[kind][m]) for m, v in values.items()}
        out.append(Reading(site_id=f"site-{i}", device_id="dev-1", gateway_id=f"gw-{i // 20}", kind=kind,
                           ts=at + timedelta(milliseconds=i % 1000), seq=minute * n + i + 1, metrics=metrics))
    return out


def _steps(state: EngineState, batches: list[list[Reading]]) -> None:
    for m, batch in enumerate(batches):
        now = T0 + timedelta(minutes=m, seconds=1)
        for r in batch:
            step(state, r, now)
        step(state, Tick(), now)


def run(n: int, minutes: int, *, new_types: bool) -> tuple[float, int]:
    """Readings/s (timed without tracing), then the state's size (a second, traced run)."""
    batches = [readings(n, m) for m in range(minutes)]  # built before the clock starts
    state = EngineState(config=config(n, new_types=new_types))
    step(state, Tick(), T0 - timedelta(minutes=1))
    t0 = time.perf_counter()
    _steps(state, batches)
    elapsed = time.perf_counter() - t0
    traced = EngineState(config=state.config)
    step(traced, Tick(), T0 - timedelta(minutes=1))
    tracemalloc.start()
    _steps(traced, batches[: max(1, len(batches) // 4)])
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return n * minutes / elapsed, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="12,1000,10000")
    parser.add_argument("--minutes", type=int, default=60)
    args = parser.parse_args()
    print("| devices | rule types | readings | readings/s (step, ticks included) "
          "| engine state after a quarter of the run |")
    print("| --- | --- | --- | --- | --- |")
    for n in (int(x) for x in args.devices.split(",")):
        minutes = max(3, args.minutes * 1000 // max(n, 1000)) if n >= 1000 else args.minutes * 10
        for new_types in (False, True):
            rate, peak = run(n, minutes, new_types=new_types)
            label = "with cumulative, equipment_off, completeness" if new_types else "before issue 13"
            print(f"| {n:,} | {label} | {n * minutes:,} | {rate:,.0f} | {peak / 1e6:.1f} MB |", flush=True)


if __name__ == "__main__":
    main()
