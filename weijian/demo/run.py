"""``weijian demo``: the whole pipeline on one machine, from simulated sensors to SMS.

It starts a real Mosquitto and a real InfluxDB on free ports in a working directory, the
simulated city of ``examples/registry.toml`` (``weijian sim run``), one ``weijian gateway
run`` per registered gateway, ``weijian ingest run`` with the alert engine and SQLite tasks,
and a local SMS inbox that prints each message. A scripted day (scenario ``demo-city``)
replays yesterday at an accelerated speed: every process shares the simulated clock, so the
alert engine judges durations in simulated time. A live terminal view shows what happens;
at the end a summary says where the data is and how to look at it.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from alerts.store import Store
from weijian.contract import CATALOGUE, Kind, alert_subscription, status_subscription, status_topic_gateway
from weijian.demo.local_services import Broker, Influx, start_influxd, start_mosquitto
from weijian.demo.sms_inbox import SmsInbox
from weijian.demo.supervise import Supervisor
from weijian.errors import ServiceError, TasksDbUnavailable, UsageError
from weijian.registry import Registry, load_registry

__all__ = ["run_demo"]

_CHINA = timezone(timedelta(hours=8))
_ROOT = "weijian/v1"
_DATABASE = "weijian"
_KIND_NAMES = {
    Kind.DRINKING_WATER: "生活饮用水",
    Kind.SWIMMING_POOL: "游泳池水",
    Kind.MEDICAL_WASTE: "医疗废物暂存",
    Kind.COLD_CHAIN: "疫苗冷链",
}


@dataclass
class Watch:
    """What the live view shows, filled from MQTT, InfluxDB, SQLite and the SMS inbox."""

    gateways: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    stored: Counter[str] = field(default_factory=Counter)
    tasks: Counter[str] = field(default_factory=Counter)
    tasks_by_kind: Counter[str] = field(default_factory=Counter)
    sms: list[dict[str, Any]] = field(default_factory=list)
    rate: float = 0.0
    sim_now: datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _yesterday_midnight() -> datetime:
    today = datetime.now(_CHINA).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1)


def _write_toml(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """A tiny TOML writer for the configs the demo generates (strings, numbers, bools, tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v), ensure_ascii=False)

    lines: list[str] = []
    for name, body in sections.items():
        arrays = {k: v for k, v in body.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        lines.append(f"[{name}]")
        lines += [f"{k} = {value(v)}" for k, v in body.items() if k not in arrays]
        for key, items in arrays.items():
            for item in items:
                lines.append(f"\n[[{name}.{key}]]")
                lines += [f"{k} = {value(v)}" for k, v in item.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class Demo:
    """One demo run: its options, the services it started and what it has seen."""

    registry: Registry
    workdir: Path
    speed: float
    duration_s: float
    scenario: str
    keep: bool
    console: Console
    watch: Watch = field(default_factory=Watch)
    broker: Broker | None = None
    influx: Influx | None = None
    inbox: SmsInbox | None = None
    supervisor: Supervisor | None = None
    clock: dict[str, Any] = field(default_factory=dict)
    _mqtt: mqtt.Client | None = None
    _tasks: Store | None = None

    # --- start ------------------------------------------------------------------------

    def start(self) -> None:
        """Bring up every part; raise ServiceError naming the part that failed."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = start_mosquitto(self.workdir / "mosquitto")
        self.influx = start_influxd(self.workdir / "influxdb")
        self.influx.query(f'CREATE DATABASE "{_DATABASE}"')
        self.console.print(
            f"[bold]服务[/] Mosquitto 127.0.0.1:{self.broker.port} · InfluxDB {self.influx.url}"
        )
        secret = secrets.token_hex(16)
        self.inbox = SmsInbox(secret.encode(), self.workdir / "sms.jsonl", self._on_sms)
        self.inbox.start()
        self.supervisor = Supervisor(self.workdir)
        self._start_simulator()
        self._start_ingest(secret)
        self._start_gateways()
        self._watch_mqtt()

    def _start_simulator(self) -> None:
        assert self.supervisor is not None
        endpoints_file = self.workdir / "endpoints.json"
        start = _yesterday_midnight()
        sim = self.supervisor.start_weijian(
            "sim", "sim", "run", "--scenario", self.scenario, "--speed", f"{self.speed:g}",
            "--start", start.isoformat(), "--endpoints-json", str(endpoints_file),
        )
        deadline = time.monotonic() + 30
        while not endpoints_file.exists():
            if not sim.is_running() or time.monotonic() > deadline:
                raise ServiceError(f"the simulator did not start; see {sim.log_file}")
            time.sleep(0.05)
        data = json.loads(endpoints_file.read_text())
        self.clock = data["clock"]
        self.endpoints = data["endpoints"]
        self.console.print(
            f"[bold]模拟[/] {len(self.endpoints)} 台设备，场景 {self.scenario}，"
            f"从 {start:%Y-%m-%d %H:%M} 起以 {self.speed:g} 倍速回放"
        )

    def _common(self) -> dict[str, dict[str, Any]]:
        assert self.broker is not None and self.influx is not None
        return {
            "mqtt": {"host": "127.0.0.1", "port": self.broker.port, "topic_root": _ROOT},
            "influx": {"url": self.influx.url, "api": "v1", "database": _DATABASE},
            "registry": {"path": str(self.registry.path)},
            # Every process stamps and judges on the replay clock: a gateway that stamped a
            # failed poll's flag-B reading with wall time had it quarantined as from the future.
            "clock": self.clock,
        }

    def _start_gateways(self) -> None:
        assert self.supervisor is not None
        by_key = {f"{e['site_id']}/{e['device_id']}": e for e in self.endpoints}
        # A poll every simulated ~6 minutes: often enough for every rule's duration.
        poll_s = max(0.1, 360 / self.speed)
        for gateway in self.registry.gateways.values():
            devices = []
            for ref in gateway.devices:
                e = by_key.get(ref)
                if e is None:
                    continue  # the scenario does not simulate this device
                device: dict[str, Any] = {
                    "site_id": e["site_id"], "device_id": e["device_id"], "profile": e["profile"],
                    "unit_id": e["unit_id"], "transport": e["transport"], "timestamp": "device",
                    "poll_interval_s": poll_s,
                }
                if e["transport"] == "tcp":
                    device |= {"host": e["host"], "port": e["port"]}
                else:
                    device |= {"serial": e["serial_path"], "line": e["line"], "baudrate": e["baudrate"]}
                devices.append(device)
            if not devices:
                continue
            config = _write_toml(self.workdir / f"{gateway.id}.toml", {
                **self._common(),
                "gateway": {
                    "id": gateway.id,
                    "status_interval_s": 2.0,
                    "poll_interval_s": poll_s,
                    "timeout_s": 0.5,
                    "retries": 0,
                    "backoff_max_s": 4 * poll_s,  # a silent device is retried within the hour
                    "metrics_port": 0,  # several gateways on one machine: any free port each
                    "spool": {"path": str(self.workdir / f"{gateway.id}-spool.sqlite"),
                              "fsync": "normal"},
                    "devices": devices,
                },
            })
            self.supervisor.start_weijian(gateway.id, "gateway", "run", "--config", str(config))
        self.console.print(f"[bold]网关[/] {len(self.registry.gateways)} 个网关已启动")

    def _start_ingest(self, secret: str) -> None:
        assert self.supervisor is not None and self.inbox is not None
        config = _write_toml(self.workdir / "ingest.toml", {
            **self._common(),
            "tasks": {"url": f"sqlite:///{self.workdir / 'tasks.sqlite'}"},
            "sms": {"url": self.inbox.url, "secret": secret},
            # Evaluate time-based rules (interruptions, door open, hold times) every simulated
            # two minutes, however fast the replay runs. The engine judges lateness on the
            # replay clock: a reading is late only when the pipeline held it for more than two
            # wall seconds (an outage's replay), not for its normal sub-second transit, which
            # at 2880x is already more than the default 300 simulated seconds.
            "alerts": {"tick_s": max(0.05, 120 / self.speed),
                       "late_after_s": max(300.0, 2.0 * self.speed)},
            "ingest": {
                # A batch waits at most a simulated minute: the default 0.2 wall seconds is 48
                # simulated minutes at 14400x, enough delay to trip a 60-minute data-interruption
                # rule on a device that answers every poll.
                "batch_interval_s": max(0.02, min(0.2, 60 / self.speed)),
                "metrics_port": 0,
                "spool_path": str(self.workdir / "ingest-spool.sqlite"),
                "quarantine_path": str(self.workdir / "quarantine.sqlite"),
            },
        })
        self.supervisor.start_weijian("ingest", "ingest", "run", "--config", str(config))
        self.console.print("[bold]中心[/] ingest 与告警引擎已启动，短信收件箱 " + self.inbox.url)

    # --- watch -----------------------------------------------------------------------

    def _on_sms(self, message: dict[str, Any]) -> None:
        with self.watch.lock:
            self.watch.sms.append(message)

    def _watch_mqtt(self) -> None:
        assert self.broker is not None
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="weijian-demo-watch")

        def on_connect(c: mqtt.Client, *_: Any) -> None:
            c.subscribe([(status_subscription(_ROOT), 1), (alert_subscription(_ROOT), 1)])

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            try:
                body = json.loads(msg.payload)
            except ValueError:
                return
            with self.watch.lock:
                if status_topic_gateway(_ROOT, msg.topic) is not None:
                    self.watch.gateways[body.get("gateway_id", msg.topic)] = body
                elif isinstance(body, dict) and "alert_id" in body:
                    self.watch.alerts[body["alert_id"]] = body

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect("127.0.0.1", self.broker.port)
        client.loop_start()
        self._mqtt = client

    def _count_tasks(self) -> tuple[Counter[str], Counter[str]]:
        """Tasks by status and by kind, through the alerts stage's own store (once ingest made it)."""
        if self._tasks is None:
            if not (self.workdir / "tasks.sqlite").exists():
                return Counter(), Counter()
            try:
                self._tasks = Store(f"sqlite:///{self.workdir / 'tasks.sqlite'}")
            except TasksDbUnavailable:
                return Counter(), Counter()
        try:
            rows = self._tasks.tasks(limit=1_000_000)
        except TasksDbUnavailable:
            return Counter(), Counter()
        statuses = Counter(str(t["status"]) for t in rows)
        kinds = Counter(self.registry.sites[t["site_id"]].kind.value for t in rows
                        if t["site_id"] in self.registry.sites)
        return statuses, kinds

    def poll(self) -> None:
        """Refresh the counts the view shows from InfluxDB and the task database."""
        assert self.influx is not None
        stored: Counter[str] = Counter()
        for kind in CATALOGUE:
            try:
                series = self.influx.query(f'SELECT count(*) FROM "{kind.value}"', _DATABASE)
            except (ServiceError, httpx.HTTPError):
                continue
            if series:
                stored[kind.value] = max((v for v in series[0]["values"][0][1:] if v), default=0)
        tasks, by_kind = self._count_tasks()
        if self.clock:
            origin = datetime.fromisoformat(self.clock["origin"])
            anchor = datetime.fromisoformat(self.clock["anchor"])
            sim_now = origin + (datetime.now(UTC) - anchor) * self.clock["speed"]
        else:
            sim_now = None
        with self.watch.lock:
            before = sum(self.watch.stored.values())
            self.watch.stored = stored
            self.watch.rate = max(0, sum(stored.values()) - before)
            self.watch.tasks, self.watch.tasks_by_kind = tasks, by_kind
            self.watch.sim_now = sim_now

    def render(self, elapsed_s: float) -> Group:
        """The live view."""
        w = self.watch
        with w.lock:
            head = Table.grid(padding=(0, 2))
            progress = min(1.0, elapsed_s / self.duration_s) if self.duration_s else 0
            sim = f"{w.sim_now.astimezone(_CHINA):%m-%d %H:%M}" if w.sim_now else "-"
            head.add_row(
                f"[bold]模拟时间[/] {sim}", f"[bold]进度[/] {progress:5.0%}",
                f"[bold]入库速率[/] {w.rate:.0f} 条/秒",
                f"[bold]已入库[/] {sum(w.stored.values())} 条",
            )
            online = sum(int(g.get("devices_online", 0)) for g in w.gateways.values())
            offline = sum(int(g.get("devices_offline", 0)) for g in w.gateways.values())
            gws = sum(1 for g in w.gateways.values() if g.get("state") == "online")
            head.add_row(
                f"[bold]网关在线[/] {gws}/{len(self.registry.gateways)}",
                f"[bold]设备[/] 在线 {online} · 离线 {offline}",
                f"[bold]告警[/] 未解除 {sum(1 for a in w.alerts.values() if a.get('state') != 'resolved')}"
                f" · 共 {len(w.alerts)}",
                "[bold]任务[/] " + (" · ".join(f"{k} {v}" for k, v in sorted(w.tasks.items())) or "0"),
            )
            kinds = Table(title="按类型", expand=False)
            for column in ("类型", "入库读数", "告警", "任务", "短信"):
                kinds.add_column(column)
            alerts_by_kind = Counter(a.get("kind") for a in w.alerts.values())
            sms_by_kind = Counter(_sms_kind(m, self.registry) for m in w.sms)
            for kind in Kind:
                kinds.add_row(_KIND_NAMES[kind], str(w.stored.get(kind.value, 0)),
                              str(alerts_by_kind.get(kind.value, 0)),
                              str(w.tasks_by_kind.get(kind.value, 0)), str(sms_by_kind.get(kind.value, 0)))
            last = Table(title="最近短信", expand=True, show_header=False)
            last.add_column("短信")
            for m in w.sms[-4:]:
                last.add_row(_sms_text(m))
        return Group(head, kinds, last)

    # --- stop ------------------------------------------------------------------------

    def stop(self) -> dict[str, int]:
        """Stop the children (gateways flush first), then the services unless --keep."""
        codes: dict[str, int] = {}
        if self._tasks is not None:
            self._tasks.close()
            self._tasks = None
        if self.supervisor is not None:
            # Ingest first: a gateway that stops announces itself offline, and the demo's end
            # is not an incident. What the gateways flush waits in ingest's broker session.
            for child in self.supervisor.children:
                if child.name == "ingest":
                    codes["ingest"] = child.stop()
            codes |= self.supervisor.stop_all()
        if self._mqtt is not None:
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
        if self.inbox is not None:
            self.inbox.stop()
        if not self.keep:
            for service in (self.broker, self.influx):
                if service is not None:
                    service.stop()
        return codes


def _sms_text(message: dict[str, Any]) -> str:
    """The message text: the webhook body's ``text`` (docs/alerts.md, "SMS webhook format")."""
    return str(message.get("text", ""))


def _sms_kind(message: dict[str, Any], registry: Registry) -> str | None:
    """The monitored kind of the site the message is about (its ``site_id``)."""
    site = registry.sites.get(str(message.get("site_id", "")))
    return site.kind.value if site else None


def run_demo(args: argparse.Namespace) -> int:
    """Run ``weijian demo`` with the parsed arguments (see :mod:`weijian.demo.cli`)."""
    if args.speed <= 0:
        raise UsageError(f"--speed: must be > 0, got {args.speed}")
    if args.duration <= 0:
        raise UsageError(f"--duration: must be > 0 seconds, got {args.duration}")
    registry = load_registry(args.registry)
    workdir = (args.workdir or Path("demo-data") / datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
    console = Console()
    demo = Demo(registry, workdir, args.speed, args.duration, args.scenario, args.keep, console)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    failed: list[str] = []
    try:
        console.print(f"[bold]weijian demo[/] 工作目录 {workdir}")
        demo.start()
        with Live(demo.render(0), console=console, refresh_per_second=2, transient=False) as live:
            while not stop.is_set() and time.monotonic() - started < args.duration:
                stop.wait(1.0)
                demo.poll()
                live.update(demo.render(time.monotonic() - started))
                assert demo.supervisor is not None
                failed = [c.name for c in demo.supervisor.failed()]
                if failed:
                    break
    finally:
        signal.signal(signal.SIGINT, previous)
        codes = demo.stop()
    _summary(demo, codes, failed)
    return 1 if failed else 0


def _summary(demo: Demo, codes: dict[str, int], failed: list[str]) -> None:
    c = demo.console
    w = demo.watch
    c.rule("总结 summary")
    c.print(f"readings stored: {sum(w.stored.values())} ({dict(w.stored)})")
    c.print(f"alert events: {len(w.alerts)}; tasks: {dict(w.tasks)}; SMS received: {len(w.sms)}")
    if failed:
        c.print(f"[red]stopped early: {', '.join(failed)} exited; see {demo.workdir / 'logs'}[/]")
    c.print(f"exit codes: {codes}")
    c.print(f"data: {demo.workdir} (tasks.sqlite, sms.jsonl, logs/, influxdb/)")
    c.print(f"dashboards: weijian dashboards build --out {demo.workdir / 'grafana'}")
    if demo.keep and demo.broker and demo.influx:
        c.print(f"services left running: Mosquitto 127.0.0.1:{demo.broker.port} (pid {demo.broker.pid}), "
                f"InfluxDB {demo.influx.url} (pid {demo.influx.pid})")
        c.print(f"query: curl -G {demo.influx.url}/query --data-urlencode db={_DATABASE} "
                "--data-urlencode \"q=SELECT count(*) FROM cold_chain\"")
        c.print(f"stop them: kill {demo.broker.pid} {demo.influx.pid}")
        if demo.clock:
            month = datetime.fromisoformat(demo.clock["origin"]).astimezone(_CHINA).strftime("%Y-%m")
            c.print(f"report: weijian report monthly --month {month} --config {demo.workdir / 'ingest.toml'} "
                    f"--out {demo.workdir / 'report'}")
    else:
        c.print("services stopped; start with --keep to query InfluxDB afterwards")
