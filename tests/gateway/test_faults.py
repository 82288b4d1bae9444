"""Acceptance: a silent device, exception answers and a garbled line delay nobody else
beyond one timeout, give flag B with null values, and show in the status topic."""

from __future__ import annotations

import itertools
from datetime import datetime

from firmware_sim.events import EventKind
from firmware_sim.scenario import load_scenario
from firmware_sim.service import run_scenario
from tests.gateway.conftest import device_config, gateway_data, running_gateway, write_scenario

POLL_S = 0.2
TIMEOUT_S = 0.5

DEVICES = [
    # line A: a good analyser and a silent one
    {"site_id": "yc-water-001", "device_id": "wq-01", "profile": "wq-analyser",
     "transport": "rtu", "line": "line-a", "unit_id": 1},
    {"site_id": "yc-water-002", "device_id": "wq-01", "profile": "wq-analyser",
     "transport": "rtu", "line": "line-a", "unit_id": 2},
    # line B: a good logger and an analyser whose answers arrive garbled
    {"site_id": "yc-mw-001", "device_id": "th-01", "profile": "waste-store-logger",
     "transport": "rtu", "line": "line-b", "unit_id": 1},
    {"site_id": "xh-water-001", "device_id": "wq-01", "profile": "wq-analyser",
     "transport": "rtu", "line": "line-b", "unit_id": 3},
    # TCP: a pool controller answering exception 6 (server busy), and a good one
    {"site_id": "yc-pool-001", "device_id": "pc-01", "profile": "pool-controller"},
    {"site_id": "dj-pool-001", "device_id": "pc-01", "profile": "pool-controller"},
]
GOOD = ["yc-water-001/wq-01", "yc-mw-001/th-01", "dj-pool-001/pc-01"]
SILENT, GARBLED, EXCEPTION = "yc-water-002/wq-01", "xh-water-001/wq-01", "yc-pool-001/pc-01"


def key(r: dict) -> str:
    return f"{r['site_id']}/{r['device_id']}"


async def test_faulty_devices_delay_nobody_and_show_in_the_status(
    tmp_path, mosquitto, topic_root, gw_registry, collector_for
):
    scenario = write_scenario(tmp_path / "faults.toml", DEVICES, lines=("line-a", "line-b"))
    async with run_scenario(load_scenario(scenario), speed=0) as sim:
        sim.inject("yc-water-002", "wq-01", EventKind.SILENT)
        sim.inject("xh-water-001", "wq-01", EventKind.GARBLED)
        sim.inject("yc-pool-001", "pc-01", EventKind.EXCEPTION, code=6)
        devices = [device_config(ep) for ep in sim.endpoints]
        data = gateway_data(
            tmp_path, mosquitto, topic_root, gw_registry, devices,
            poll_interval_s=POLL_S, timeout_s=TIMEOUT_S, retries=2, backoff_max_s=0.8,
        )
        collector = collector_for(mosquitto, topic_root)
        async with running_gateway(data):
            await collector.wait_for(
                lambda c: any(
                    s["state"] == "online"
                    and set(s["offline_devices"]) == {SILENT, GARBLED, EXCEPTION}
                    and all(s["devices"][k]["errors"] for k in (SILENT, GARBLED, EXCEPTION))
                    for s in c.statuses()
                ),
                10,
                "a status naming the three faulty devices offline",
            )
            await collector.wait_for(
                lambda c: sum(key(r) == GOOD[0] for r in c.readings()) >= 15, 10, "15 good readings"
            )
            sim.clear("yc-water-002", "wq-01")  # the silent device answers again
            await collector.wait_for(
                lambda c: SILENT not in c.statuses()[-1]["offline_devices"], 5, "the silent device online"
            )
        readings = collector.readings()
        statuses = collector.statuses()

    for good in GOOD:
        stamps = sorted(datetime.fromisoformat(r["ts"]) for r in readings if key(r) == good)
        assert len(stamps) >= 10, good
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
        # At most one timeout late; retries on a shared line would make it 1 + retries.
        assert max(gaps) <= POLL_S + TIMEOUT_S + 0.25, (good, max(gaps))
        assert all(m["flag"] == "N" for r in readings if key(r) == good for m in r["metrics"].values())
    for bad in (SILENT, GARBLED, EXCEPTION):
        failed = [
            r for r in readings if key(r) == bad and any(m["value"] is None for m in r["metrics"].values())
        ]
        assert failed, bad
        assert all(m == {"value": None, "unit": m["unit"], "flag": "B"}
                   for r in failed for m in r["metrics"].values())
    report = next(s for s in statuses if SILENT in s["offline_devices"] and GARBLED in s["offline_devices"])
    assert set(report["devices"][SILENT]["errors"]) == {"timeout"}
    assert set(report["devices"][GARBLED]["errors"]) == {"frame"}
    assert set(report["devices"][EXCEPTION]["errors"]) == {"exception"}
    assert report["errors_by_device"].keys() >= {SILENT, GARBLED, EXCEPTION}
    assert report["devices_online"] == 3
    # the silent device's data resumed with normal values after the fault cleared
    assert any(key(r) == SILENT and r["metrics"]["ph"]["flag"] == "N" for r in readings)


async def test_an_exception_answer_names_the_request_and_the_metrics_in_it(
    tmp_path, mosquitto, topic_root, gw_registry, collector_for
):
    scenario = write_scenario(tmp_path / "one.toml", [DEVICES[0]], lines=("line-a",))
    async with run_scenario(load_scenario(scenario), speed=0) as sim:
        sim.inject("yc-water-001", "wq-01", EventKind.EXCEPTION, code=2)
        data = gateway_data(tmp_path, mosquitto, topic_root, gw_registry,
                            [device_config(ep) for ep in sim.endpoints], timeout_s=TIMEOUT_S)
        collector = collector_for(mosquitto, topic_root)
        async with running_gateway(data):
            await collector.wait_for(
                lambda c: any(s["devices"].get(GOOD[0], {}).get("last_error") for s in c.statuses()),
                10, "a status with the device's error",
            )
    error = next(s["devices"][GOOD[0]]["last_error"] for s in collector.statuses()
                 if s["devices"].get(GOOD[0], {}).get("last_error"))
    # wq-analyser: free chlorine is the first input register of the first block.
    assert error.startswith("unit 1, function 4 (input) at address 0, ")
    assert "free_chlorine" in error and "exception 2 (ILLEGAL DATA ADDRESS)" in error
