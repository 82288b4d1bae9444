"""The gateway's /metrics and /healthz, scraped from `weijian gateway run` as Prometheus would:
polls and errors by kind per device, spool depth, and the publish lag growing while the broker
is down and back to 0 after it returns."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from firmware_sim.events import EventKind
from firmware_sim.scenario import load_scenario
from firmware_sim.service import run_scenario
from tests.gateway.conftest import ROOT, device_config, gateway_data, toml_dump, write_scenario
from weijian.demo.local_services import free_port

DEVICES = [
    {"site_id": "yc-water-001", "device_id": "wq-01", "profile": "wq-analyser"},
    {"site_id": "yc-pool-001", "device_id": "pc-01", "profile": "pool-controller"},
    {"site_id": "yc-cc-001", "device_id": "fr-01", "profile": "fridge-logger"},
]
GOOD, SILENT, BUSY = "yc-water-001/wq-01", "yc-pool-001/pc-01", "yc-cc-001/fr-01"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples[(name, tuple(sorted(labels.items())))]


async def wait_for(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = await asyncio.to_thread(predicate)
        except (httpx.HTTPError, KeyError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_metrics_count_polls_errors_spool_and_publish_lag_through_a_broker_outage(
    tmp_path, fresh_mosquitto, topic_root, gw_registry
):
    scenario = write_scenario(tmp_path / "three.toml", DEVICES)
    async with run_scenario(load_scenario(scenario), speed=0) as sim:
        sim.inject("yc-pool-001", "pc-01", EventKind.SILENT)
        sim.inject("yc-cc-001", "fr-01", EventKind.EXCEPTION, code=6)
        port = free_port()
        data = gateway_data(tmp_path, fresh_mosquitto, topic_root, gw_registry,
                            [device_config(ep) for ep in sim.endpoints],
                            poll_interval_s=0.1, timeout_s=0.2, retries=0, backoff_max_s=0.2,
                            metrics_port=port)
        config = tmp_path / "gateway.toml"
        config.write_text(toml_dump(data), encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "weijian", "gateway", "run", "--config", str(config), cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        try:
            first = await wait_for(lambda: (s := scrape(port)) and value(
                s, "gateway_polls_total", device=SILENT) >= 3 and value(
                s, "gateway_published_total", gateway_id="gw-test") >= 5 and s, 20, "polls and publishes")
            assert value(first, "gateway_polls_total", device=GOOD) >= 5
            assert value(first, "gateway_poll_errors_total", device=SILENT, kind="timeout") >= 3
            assert value(first, "gateway_poll_errors_total", device=BUSY, kind="exception") >= 3
            assert value(first, "gateway_poll_errors_total", device=GOOD, kind="timeout") == 0
            assert value(first, "gateway_device_online", device=GOOD) == 1
            assert value(first, "gateway_device_online", device=SILENT) == 0
            assert value(first, "gateway_mqtt_connected", gateway_id="gw-test") == 1
            async with httpx.AsyncClient() as client:
                health = (await client.get(f"http://127.0.0.1:{port}/healthz", timeout=5)).json()
            assert health["ok"] and health["mqtt_connected"] and health["devices_offline"] == 2

            fresh_mosquitto.stop()
            down = await wait_for(lambda: (s := scrape(port)) and value(
                s, "gateway_spool_readings", gateway_id="gw-test") >= 20 and value(
                s, "gateway_publish_lag_seconds", gateway_id="gw-test") >= 1.0 and s, 30, "a queue and a lag")
            assert value(down, "gateway_mqtt_connected", gateway_id="gw-test") == 0

            fresh_mosquitto.start()
            await wait_for(lambda: (s := scrape(port)) and value(
                s, "gateway_spool_readings", gateway_id="gw-test") < 5 and value(
                s, "gateway_publish_lag_seconds", gateway_id="gw-test") < 1.0 and value(
                s, "gateway_mqtt_connected", gateway_id="gw-test") == 1, 30, "the queue drained")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
