"""Shared fixtures: real Mosquitto and InfluxDB on free loopback ports, SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psycopg
import pytest

from weijian.demo.local_services import Broker, Influx, running_influxd, running_mosquitto

if TYPE_CHECKING:
    from tests.alerts.conftest import Receiver

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_REGISTRY = ROOT / "examples" / "registry.toml"
POSTGRES_DSN = os.environ.get("WEIJIAN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One Mosquitto for the session; tests isolate themselves with :func:`topic_root`."""
    with running_mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture
def fresh_mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, for tests that stop, kill or restart it."""
    with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    """One InfluxDB 1.x for the session; tests isolate themselves with :func:`influx_db`."""
    with running_influxd(tmp_path_factory.mktemp("influxd")) as influx:
        yield influx


@pytest.fixture
def influx_db(influxd: Influx) -> Iterator[str]:
    """A fresh database per test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    influxd.query(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        if influxd.is_running():
            httpx.post(f"{influxd.url}/query", params={"q": f'DROP DATABASE "{name}"'}, timeout=30)


@pytest.fixture
def topic_root() -> str:
    """A topic root no other test uses, so tests can share one broker."""
    return f"test-{uuid.uuid4().hex[:10]}/v1"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file of the test's own."""
    return f"sqlite:///{tmp_path / 'tasks.sqlite'}"


@contextlib.contextmanager
def private_schema(prefix: str) -> Iterator[str]:
    """A fresh schema in the local PostgreSQL, dropped afterwards; yields its URL."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # fail loudly: the production path must be tested
        pytest.fail(f"PostgreSQL at {POSTGRES_DSN} is not reachable: {exc}")
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{POSTGRES_DSN}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The local PostgreSQL with a fresh schema for this test run, dropped at the end."""
    with private_schema("weijian_test") as url:
        yield url


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """An empty PostgreSQL schema of this test's own, so counts are this test's rows only."""
    with private_schema("weijian_own") as url:
        yield url


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local SMS relay that checks each request's signature (tests/alerts/conftest.py)."""
    from tests.alerts.conftest import Receiver

    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def example_registry() -> Path:
    """The realistic registry shipped in examples/."""
    return EXAMPLE_REGISTRY
