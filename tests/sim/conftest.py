"""Fixtures for the firmware_sim tests: scenarios served in-process on loopback and ptys."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from firmware_sim.scenario import load_scenario
from firmware_sim.service import Simulation, run_scenario


@pytest.fixture
async def normal_day() -> AsyncIterator[Simulation]:
    """The normal-day scenario with the clock stopped at 15:00 (speed 0)."""
    async with run_scenario(load_scenario("normal-day"), speed=0, start_offset_h=15) as sim:
        yield sim


@pytest.fixture
async def field_faults() -> AsyncIterator[Simulation]:
    """The field-faults scenario with the clock stopped at its start (speed 0)."""
    async with run_scenario(load_scenario("field-faults"), speed=0) as sim:
        yield sim
