"""Fixtures for the dashboard tests: the boards built from the real rule packs and registry, and
one InfluxDB database filled once with demo-city's simulated day."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from simday import FilledInflux, fill_day

from dashboards.boards import BoardOptions, build_all, to_json
from weijian.demo.local_services import Influx
from weijian.registry import Registry, load_registry
from weijian.rules import default_rule_packs

EXAMPLE_REGISTRY = Path(__file__).resolve().parents[2] / "examples" / "registry.toml"
# The simulated day samples every 5 minutes, so the boards expect one reading per 300 s.
STEP_S = 300.0


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry(EXAMPLE_REGISTRY)


@pytest.fixture(scope="session")
def boards(registry: Registry) -> list[dict[str, Any]]:
    options = BoardOptions(expected_interval_s=STEP_S, silent_after_min=15, registry=registry)
    return [to_json(b) for b in build_all(default_rule_packs(), options)]


@pytest.fixture(scope="session")
def filled_influx(influxd: Influx, registry: Registry) -> Iterator[FilledInflux]:
    """demo-city's day, written once for every query test (they only read)."""
    name = f"dash_{uuid.uuid4().hex[:10]}"
    influxd.query(f'CREATE DATABASE "{name}"')
    try:
        day = fill_day(influxd.url, name, registry, default_rule_packs(), step_s=STEP_S)
        yield FilledInflux(influxd, name, day)
    finally:
        if influxd.is_running():
            httpx.post(f"{influxd.url}/query", params={"q": f'DROP DATABASE "{name}"'}, timeout=30)
