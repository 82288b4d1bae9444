"""Run weijian programs as child processes that can never outlive their parent.

``weijian demo`` starts the simulator, the gateways and ingest this way. Each child gets its
own log file, its own process group (a Ctrl-C in the terminal reaches only the parent, which
then stops the children in order), and on Linux ``PR_SET_PDEATHSIG`` so that even a parent
killed with SIGKILL takes its children with it: no orphans, no ports left bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Child", "Supervisor"]

from weijian.parent_death import PARENT_ENV as _PARENT_ENV


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
