"""Run weijian programs as child processes that can never outlive their parent.

``weijian demo`` starts the simulator, the gateways and ingest this way. Each child gets its
own log file, its own process group (a Ctrl-C in the terminal reaches only the parent, which
then stops the children in order), and on Linux ``PR_SET_PDEATHSIG`` so that even a parent
killed with SIGKILL takes its children with it: no orphans, no ports left bound.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Child", "Supervisor", "die_with_parent_if_asked"]

_PR_SET_PDEATHSIG = 1
_PARENT_ENV = "WEIJIAN_SUPERVISOR_PID"


def die_with_parent_if_asked() -> None:
    """In a supervised child: ask the kernel to SIGKILL us when the supervisor dies.

    Called first thing by the CLI. Done in the child rather than in ``preexec_fn``, which is
    unsafe in a parent with threads. If the supervisor already died before the request took
    effect, exit at once.
    """
    parent = os.environ.get(_PARENT_ENV)
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # the supervisor's own cleanup still stops us
    if os.getppid() != int(parent):
        os._exit(1)


@dataclass
class Child:
    """One supervised process."""

    name: str
    proc: subprocess.Popen[bytes]
    log_file: Path

    def is_running(self) -> bool:
        """Whether it is still alive."""
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


@dataclass
class Supervisor:
    """Start children under ``workdir``; :meth:`stop_all` stops them newest first."""

    workdir: Path
    children: list[Child] = field(default_factory=list)

    def start_weijian(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        """Start ``weijian ARGS...`` with this Python, logging to ``workdir/logs/NAME.log``."""
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_file = logs / f"{name}.log"
        with log_file.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "weijian.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env={**os.environ, **(env or {}), _PARENT_ENV: str(os.getpid())},
                start_new_session=True,
            )
        child = Child(name, proc, log_file)
        self.children.append(child)
        return child

    def failed(self) -> list[Child]:
        """Children that have exited on their own."""
        return [c for c in self.children if not c.is_running()]

    def stop_all(self, timeout_s: float = 15.0) -> dict[str, int]:
        """Stop every child, newest first; return their exit codes by name."""
        codes = {}
        for child in reversed(self.children):
            codes[child.name] = child.stop(timeout_s)
        return codes
