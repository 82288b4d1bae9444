"""Helpers for the multi-process tests: a registry of fridges, a private PostgreSQL to stop at
will, `weijian ingest run` processes, a publisher that survives broker restarts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from weijian.demo.local_services import Broker, Influx, free_port

REPO = Path(__file__).resolve().parents[2]
# The newest installed server (Debian: /usr/lib/postgresql/<major>/bin).
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name),
             default=Path("/usr/lib/postgresql/15/bin"))


def fridge_registry(
    path: Path, gateways: int, per_gateway: int, metrics: tuple[str, ...] = ("temperature",)
) -> list[tuple[str, str, str]]:
    """A registry of cold-chain sites, one fridge each, ``per_gateway`` sites per gateway.

    Returns:
        ``(site_id, device_id, gateway_id)`` for every device.
    """
    lines = [
        '[[districts]]\nid = "d1"\nname = "测试区"\nteam = "测试监督所"\n'
        'supervisors = [{ name = "王一", phone = "13800000001" }]\n',
        '[[units]]\nid = "u1"\nname = "测试医院"\nlicence = "测试证字第1号"\ndistrict = "d1"\n'
        'handler = { name = "李二", phone = "13800000002" }\n'
        'head = { name = "张三", phone = "13800000003" }\n'
        'alarm_contacts = [{ name = "赵四", phone = "13800000004" },'
        ' { name = "钱五", phone = "13800000005" }]\n',
    ]
    devices = []
    listed = ", ".join(f'"{m}"' for m in metrics)
    for g in range(gateways):
        refs = []
        for i in range(per_gateway):
            site = f"cc-{g:02d}-{i:02d}"
            lines.append(
                f'[[sites]]\nid = "{site}"\nname = "冷库{g}-{i}"\nkind = "cold_chain"\ndistrict = "d1"\n'
                f'unit = "u1"\naddress = "测试路{g}号"\nstorage = "refrigerated"\n'
                f'devices = [{{ id = "fr-01", profile = "fridge-logger", metrics = [{listed}] }}]\n'
            )
            refs.append(f'"{site}/fr-01"')
            devices.append((site, "fr-01", f"gw-{g:02d}"))
        lines.append(f'[[gateways]]\nid = "gw-{g:02d}"\nname = "网关{g}"\ndevices = [{", ".join(refs)}]\n')
    path.write_text("\n".join(lines), encoding="utf-8")
    return devices


def fridge_readings(
    root: str, devices: list[tuple[str, str, str]], hot: set[str], minutes: int, start: datetime
) -> list[tuple[str, bytes]]:
    """One reading a minute per device, in time order; the ``hot`` sites read 9.5 °C."""
    out = []
    for m in range(minutes):
        ts = (start + timedelta(minutes=m)).isoformat().replace("+00:00", "Z")
        for g, (site, device, gateway) in enumerate(devices):
            body = {
                "site_id": site, "device_id": device, "gateway_id": gateway, "kind": "cold_chain",
                "ts": ts, "seq": m * len(devices) + g,
                "metrics": {
                    "temperature": {"value": 9.5 if site in hot else 4.0, "unit": "degC", "flag": "N"},
                },
            }
            out.append((f"{root}/{site}/{device}/reading", json.dumps(body).encode()))
    return out


def recent_start(minutes: int) -> datetime:
    """A start such that the last of ``minutes`` readings is about now (none in the future)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes)


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, on a free port, to stop and start at will."""

    root: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        cmd = [str(a) for a in args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def init(self) -> None:
        self.port = free_port()
        data = self.root / "data"
        self.root.chmod(0o777)
        self._as_postgres(PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        self._as_postgres(
            PG_BIN / "pg_ctl", "-D", self.root / "data", "-l", self.root / "log", "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
        )

    def stop(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.root / "data", "-m", "fast", "-w", "stop")

    def count(self, sql: str) -> int:
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else 0


def private_postgres() -> PrivatePostgres:
    """Initialise and start one (the caller stops it and removes ``root``)."""
    root = Path(tempfile.mkdtemp(prefix="weijian-pg-"))
    shutil.chown(root, "postgres") if os.geteuid() == 0 else None
    pg = PrivatePostgres(root)
    pg.init()
    pg.start()
    return pg


def ingest_config(
    tmp_path: Path, name: str, *, broker: Broker, influx: Influx, database: str, root: str,
    registry: Path, tasks_url: str, sms_url: str, secret: str, deployment: str, **ingest: Any,
) -> Path:
    """The TOML of one ingest process of a deployment (alerts on)."""
    keys = {
        "client_id": deployment, "alerts": True, "batch_interval_s": 0.05, "claim_interval_s": 0.5,
        "metrics_port": free_port(), "spool_path": str(tmp_path / f"{name}-spool.sqlite"),
        "quarantine_path": str(tmp_path / f"{name}-q.sqlite"),
        "dedup_path": str(tmp_path / f"{name}-dedup.sqlite"),
        **ingest,
    }
    conf = tmp_path / f"{name}.toml"
    conf.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ntopic_root = "{root}"\n'
        f'[influx]\nurl = "{influx.url}"\ndatabase = "{database}"\ntimeout_s = 2.0\n'
        f'[registry]\npath = "{registry}"\n[tasks]\nurl = "{tasks_url}"\n'
        f'[sms]\nurl = "{sms_url}"\nsecret = "{secret}"\n'
        '[alerts]\ntick_s = 1.0\nretry_initial_s = 0.2\nretry_max_s = 1.0\ndb_timeout_s = 3.0\n'
        "[ingest]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()),
        encoding="utf-8",
    )
    return conf


@dataclass
class IngestProcess:
    """`weijian ingest run` as a child process, with its /healthz."""

    conf: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        for line in self.conf.read_text().splitlines():
            if line.startswith("metrics_port"):
                return int(line.split("=")[1])
        raise AssertionError("no metrics_port")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "weijian.cli", "--log-level", "WARNING", "ingest", "run",
             "--config", str(self.conf)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"),
        )

    def health(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.poll() is None, (
            f"ingest exited with {self.proc and self.proc.returncode}: {self.log.read_text()[-3000:]}"
        )
        try:
            got: dict[str, Any] = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return {}
        return got

    def partitions(self) -> list[int]:
        return list(self.health().get("partitions", []))

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        return float(text.split(f"\n{name} ")[1].split()[0])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(60)


@dataclass
class Publisher:
    """Publishes at QoS 1 at a steady rate from a thread, through broker restarts.

    ``acked`` holds the indices of the messages whose PUBACK arrived: those the broker took.
    """

    broker: Broker
    messages: list[tuple[str, bytes]]
    rate_per_s: float
    acked: set[int] = field(default_factory=set)
    sent: int = 0
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{id(self):x}",
                             protocol=MQTTProtocolVersion.MQTTv311, clean_session=False)
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(100)
        client.reconnect_delay_set(0.1, 1)
        infos: list[Any] = []
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        began = time.monotonic()
        try:
            for i, (topic, payload) in enumerate(self.messages):
                delay = began + i / self.rate_per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                infos.append(client.publish(topic, payload, qos=1))
                self.sent = i + 1
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(_acked(info) for info in infos):
                time.sleep(0.2)
        finally:
            with self._lock:
                self.acked = {i for i, info in enumerate(infos) if _acked(info)}
            client.disconnect()
            client.loop_stop()

    def join(self, timeout_s: float = 180) -> None:
        assert self._thread is not None
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the publisher did not finish"


def _acked(info: mqtt.MQTTMessageInfo) -> bool:
    # A message published while the broker restarts is queued by paho and sent on reconnection,
    # but its info keeps rc NO_CONN, so is_published() raises: read the flag paho sets on PUBACK.
    return bool(info._published)


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (AssertionError, httpx.HTTPError, psycopg.Error) as exc:
            last = exc
            if isinstance(exc, AssertionError) and "ingest exited" in str(exc):
                raise
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} ({last})")
