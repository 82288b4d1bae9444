"""Start Mosquitto and InfluxDB as child processes on free loopback ports.

Used by the test fixtures and by ``weijian demo``: each service gets its own working
directory with a generated config, logs to a file there (not a pipe nobody drains), is
waited on until it answers, and is stopped (SIGTERM, then SIGKILL) however the caller ends.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from weijian.errors import ServiceError

__all__ = [
    "Broker",
    "Influx",
    "free_port",
    "running_influxd",
    "running_mosquitto",
    "start_influxd",
    "start_mosquitto",
]

# Debian installs both daemons under /usr/sbin or /usr/bin; neither is on a user's PATH always.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _executable(name: str, package: str) -> str:
    found = shutil.which(name, path=_SEARCH_PATH)
    if found is None:
        raise ServiceError(f"{name} not found: install the Debian package {package!r}")
    return found


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class _Process:
    name: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_file: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def is_running(self) -> bool:
        """Whether the process is still alive."""
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL; safe to call twice."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL at once, as a power cut would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self.proc.send_signal(signal.SIGCONT)


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], log_file: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"exited with {proc.returncode}; log:\n{_tail(log_file)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ServiceError(f"did not accept connections on port {port}; log:\n{_tail(log_file)}")


@dataclass
class Broker(_Process):
    """A Mosquitto broker on 127.0.0.1."""

    host: str = "127.0.0.1"
    port: int = 0
    extra_config: str = field(default="", repr=False)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (again) on the same port with the same config and persistence file."""
        if self.is_running():
            return
        conf = self.workdir / "mosquitto.conf"
        self.proc = subprocess.Popen(
            [_executable("mosquitto", "mosquitto"), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=self.log_file.open("ab"),
            start_new_session=True,
        )
        try:
            _wait_tcp(self.port, self.proc, self.log_file, timeout_s)
        except ServiceError as exc:
            self.stop()
            raise ServiceError(f"mosquitto on port {self.port}: {exc}") from exc


def start_mosquitto(workdir: Path, *, port: int | None = None, extra_config: str = "") -> Broker:
    """Start Mosquitto with persistence in ``workdir`` and queues sized for long outages.

    ``max_queued_messages 0`` lifts Mosquitto's default of 1000 messages per offline
    persistent session, past which it drops messages silently; ``examples/mosquitto.conf``
    explains the production sizing.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        # Run as root, mosquitto switches to user 'mosquitto', who cannot write workdir.
        f"user {getpass.getuser()}\n"
        "persistence true\n"
        f"persistence_location {workdir}/\n"
        "autosave_interval 1\n"
        "max_queued_messages 0\n"
        "max_inflight_messages 100\n"
        "log_dest stderr\n"
        "log_type error\nlog_type warning\nlog_type notice\n"
        + extra_config
    )
    log_file = workdir / "mosquitto.log"
    broker = Broker(
        name="mosquitto",
        proc=subprocess.Popen(["true"]),
        workdir=workdir,
        log_file=log_file,
        port=port,
        extra_config=extra_config,
    )
    broker.proc.wait()
    broker.start()
    return broker


@dataclass
class Influx(_Process):
    """An InfluxDB 1.x server on 127.0.0.1 (HTTP API at :attr:`url`)."""

    port: int = 0
    rpc_port: int = 0

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start (again) with the same config and data directory."""
        if self.is_running():
            return
        self.proc = subprocess.Popen(
            [_executable("influxd", "influxdb"), "-config", str(self.workdir / "influxdb.conf")],
            stdout=self.log_file.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"influxd exited with {self.proc.returncode}; log:\n{_tail(self.log_file)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ping", timeout=0.5).status_code == 204:
                    return
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"influxd on port {self.port} did not answer /ping in {timeout_s} s")

    def query(self, q: str, database: str | None = None, epoch: str | None = None) -> list[dict]:  # type: ignore[type-arg]
        """Run InfluxQL and return the ``series`` of the first statement (empty if none)."""
        params = {"q": q}
        if database:
            params["db"] = database
        if epoch:
            params["epoch"] = epoch
        response = httpx.post(f"{self.url}/query", params=params, timeout=30)
        response.raise_for_status()
        result = response.json()["results"][0]
        if "error" in result:
            raise ServiceError(f"InfluxQL {q!r}: {result['error']}")
        series: list[dict] = result.get("series", [])  # type: ignore[type-arg]
        return series


def start_influxd(workdir: Path, *, port: int | None = None) -> Influx:
    """Start InfluxDB 1.x with its data, WAL and meta directories inside ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    rpc_port = free_port()
    (workdir / "influxdb.conf").write_text(
        "reporting-disabled = true\n"
        f'bind-address = "127.0.0.1:{rpc_port}"\n'
        "[meta]\n"
        f'  dir = "{workdir}/meta"\n'
        "[data]\n"
        f'  dir = "{workdir}/data"\n'
        f'  wal-dir = "{workdir}/wal"\n'
        '  index-version = "inmem"\n'
        "  query-log-enabled = false\n"
        "[monitor]\n"
        "  store-enabled = false\n"
        "[http]\n"
        f'  bind-address = "127.0.0.1:{port}"\n'
        "  log-enabled = false\n"
        "  max-body-size = 0\n"
        "[continuous_queries]\n"
        "  enabled = false\n"
    )
    influx = Influx(
        name="influxd",
        proc=subprocess.Popen(["true"]),
        workdir=workdir,
        log_file=workdir / "influxd.log",
        port=port,
        rpc_port=rpc_port,
    )
    influx.proc.wait()
    influx.start()
    return influx


@contextlib.contextmanager
def running_mosquitto(workdir: Path, **kwargs: object) -> Iterator[Broker]:
    """Context manager form of :func:`start_mosquitto`; stops the broker on exit."""
    broker = start_mosquitto(workdir, **kwargs)  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()


@contextlib.contextmanager
def running_influxd(workdir: Path, **kwargs: object) -> Iterator[Influx]:
    """Context manager form of :func:`start_influxd`; stops the server on exit."""
    influx = start_influxd(workdir, **kwargs)  # type: ignore[arg-type]
    try:
        yield influx
    finally:
        influx.stop()
