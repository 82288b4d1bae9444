"""Gateway test helpers: a registry where one gateway serves every device, scenarios written
on the fly, settings that point the gateway at a simulation, and an MQTT collector."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.scenario import Transport
from firmware_sim.service import Endpoint, Simulation
from gateway.service import plan_devices, plan_loggers, run_gateway
from weijian.config import Settings
from weijian.demo.local_services import Broker
from weijian.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_ID = "gw-test"

ALL_DEVICES = [
    "yc-water-001/wq-01", "yc-water-002/wq-01", "xh-water-001/wq-01",
    "yc-pool-001/pc-01", "dj-pool-001/pc-01",
    "yc-mw-001/th-01", "dj-mw-001/th-01", "xh-mw-001/th-01",
    "yc-cc-001/fr-01", "yc-cc-001/fr-02", "dj-cc-001/fr-01", "xh-cc-001/fz-01",
]


@pytest.fixture(scope="session")
def gw_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/registry.toml with its gateways replaced: gw-test serves every device,
    gw-other serves none of them (for the refusal tests it serves a device of its own)."""
    text = (ROOT / "examples" / "registry.toml").read_text(encoding="utf-8")
    head = text[: text.index("[[gateways]]")]
    devices = ", ".join(f'"{d}"' for d in ALL_DEVICES[:-1])
    head += (
        f'[[gateways]]\nid = "{GATEWAY_ID}"\nname = "测试网关"\ndevices = [{devices}]\n\n'
        f'[[gateways]]\nid = "gw-other"\nname = "另一网关"\ndevices = ["{ALL_DEVICES[-1]}"]\n'
    )
    path = tmp_path_factory.mktemp("registry") / "registry.toml"
    path.write_text(head, encoding="utf-8")
    load_registry(path)  # fail here, not in a test, if the edit broke it
    return path


def write_scenario(path: Path, devices: list[dict[str, Any]], lines: tuple[str, ...] = ()) -> Path:
    """A scenario file with the given devices (keys as in firmware_sim scenario files)."""
    out = [
        'name = "gateway-test"',
        'description = "gateway test"',
        "start = 2026-07-15T15:00:00+08:00",
        "speed = 0.0",
        "seed = 3",
        "duration_h = 24.0",
    ]
    for line in lines:
        out += ["[[lines]]", f'id = "{line}"', "baudrate = 9600"]
    for d in devices:
        out.append("[[devices]]")
        out += [f"{k} = {json.dumps(v)}" for k, v in d.items()]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def device_config(ep: Endpoint, **extra: Any) -> dict[str, Any]:
    """A ``[[gateway.devices]]`` entry that reaches a simulated device."""
    entry: dict[str, Any] = {"site_id": ep.site_id, "device_id": ep.device_id, "unit_id": ep.unit_id}
    if ep.transport is Transport.TCP:
        entry |= {"transport": "tcp", "host": ep.host, "port": ep.port}
    else:
        entry |= {"transport": "rtu", "serial": ep.serial_path, "line": ep.line, "baudrate": ep.baudrate}
    return entry | extra


def gateway_data(
    tmp_path: Path, broker: Broker, root: str, registry: Path, devices: list[dict[str, Any]],
    **gateway: Any,
) -> dict[str, Any]:
    """The TOML content (as a dict) of a gateway configuration."""
    return {
        "mqtt": {"host": broker.host, "port": broker.port, "topic_root": root},
        "registry": {"path": str(registry)},
        "gateway": {
            "id": GATEWAY_ID,
            "spool": {"path": str(tmp_path / "spool.sqlite"), "fsync": "normal"},
            "poll_interval_s": 0.2,
            "timeout_s": 0.3,
            "status_interval_s": 0.5,
            "backoff_max_s": 1.0,
            "drain_timeout_s": 5.0,
            "frame_gap_s": 0.005,
            "metrics_port": 0,
            "devices": devices,
        } | gateway,
    }


def toml_dump(data: dict[str, Any]) -> str:
    """Enough TOML for gateway_data(): tables, arrays of tables, scalars."""
    out: list[str] = []

    def scalar(v: Any) -> str:
        return json.dumps(v)

    def table(prefix: str, d: dict[str, Any]) -> None:
        out.append(f"[{prefix}]")
        subs = []
        for k, v in d.items():
            if isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict)):
                subs.append((k, v))
            else:
                out.append(f"{k} = {scalar(v)}")
        for k, v in subs:
            if isinstance(v, dict):
                table(f"{prefix}.{k}", v)
            else:
                for item in v:
                    out.append(f"[[{prefix}.{k}]]")
                    out.extend(f"{ik} = {scalar(iv)}" for ik, iv in item.items())

    for name, section in data.items():
        table(name, section)
    return "\n".join(out) + "\n"


@asynccontextmanager
async def running_gateway(data: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Run the gateway in-process until the block exits (then SIGTERM-style stop)."""
    settings = Settings(**data)
    registry = load_registry(settings.registry.path)
    plans = plan_devices(settings, registry)
    loggers = plan_loggers(settings, registry)
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(settings, plans, stop, loggers=loggers), name="gateway-under-test")
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Collector:
    """A paho subscriber in its own thread; persistent session so a broker restart loses nothing."""

    broker: Broker
    root: str
    messages: list[Message] = field(default_factory=list)
    client_id: str = field(default_factory=lambda: f"collector-{uuid.uuid4().hex[:8]}")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{self.root}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        deadline = time.monotonic() + 5
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, msg.payload, bool(msg.retain)))

    def readings(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m.json() for m in self.messages if m.topic.endswith("/reading")]

    def statuses(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m.json() for m in self.messages if "/gateways/" in m.topic]

    async def wait_for(self, predicate: Callable[[Collector], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(self):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
            await asyncio.sleep(0.05)


@pytest.fixture
def collector_for() -> Iterator[Callable[[Broker, str], Collector]]:
    made: list[Collector] = []

    def make(broker: Broker, root: str) -> Collector:
        c = Collector(broker, root)
        c.start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


__all__ = ["Simulation"]
