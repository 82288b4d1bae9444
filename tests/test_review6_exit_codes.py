"""An interrupted command exits 1: the contract's exit codes are 0 (done), 2 and 1, never 130.

``weijian tasks user add --password-stdin`` waits on standard input with no signal handler of
its own, so a SIGINT there reaches Python's default handler (KeyboardInterrupt). The long
runners (``sim run``, ``gateway run``, ``ingest run``, ``demo``) handle SIGINT as a clean stop
and exit 0, which their docs say.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WAITING_ON_STDIN = ("pipe_read", "anon_pipe_read", "pipe_wait", "wait_woken")


def _wait_until_reading_stdin(proc: subprocess.Popen[str], log: Path, timeout_s: float = 60) -> None:
    """Until the process sleeps in read(2) on its stdin pipe (or, failing /proc, settles after start-up)."""
    deadline = time.monotonic() + timeout_s
    started_at: float | None = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            wchan = Path(f"/proc/{proc.pid}/wchan").read_text()
        except OSError:
            wchan = ""
        if wchan in WAITING_ON_STDIN:
            return
        if started_at is None and "alerts.schema_upgraded" in log.read_text():
            started_at = time.monotonic()  # the database is ready: readline() comes next
        if started_at is not None and not wchan.strip("0") and time.monotonic() - started_at > 2:
            return  # this kernel does not show wchan
        time.sleep(0.05)
    raise AssertionError(f"the command never waited on stdin; log:\n{log.read_text()}")


def test_sigint_while_a_command_waits_exits_1_not_130(tmp_path: Path, example_registry: Path) -> None:
    conf = tmp_path / "weijian.toml"
    conf.write_text(f'[tasks]\nurl = "sqlite:///{tmp_path / "tasks.sqlite"}"\n'
                    f'[registry]\npath = "{example_registry}"\n')
    log = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEIJIAN_")}
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "weijian.cli", "tasks", "user", "add", "alice", "--name", "Alice",
             "--district", "chengguan", "--password-stdin", "--config", str(conf)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
        )
    try:
        _wait_until_reading_stdin(proc, log)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, log.read_text()
    assert "added" not in out  # interrupted: nothing was done
