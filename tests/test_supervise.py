"""Supervised children never outlive their parent, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PARENT = """
import sys, time
from pathlib import Path
from weijian.demo.supervise import Supervisor
sup = Supervisor(Path(sys.argv[1]))
child = sup.start_weijian("sim", "sim", "run", "--scenario", "demo-city", "--speed", "0")
print(child.proc.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_children_die_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        log = tmp_path / "logs" / "sim.log"
        deadline = time.monotonic() + 20
        while "ready" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.1)
        assert alive(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert wait_gone(child_pid), "the child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_stop_all_stops_children_cleanly(tmp_path: Path) -> None:
    from weijian.demo.supervise import Supervisor

    sup = Supervisor(tmp_path)
    child = sup.start_weijian("sim", "sim", "run", "--scenario", "demo-city", "--speed", "0")
    deadline = time.monotonic() + 20
    while "ready" not in child.log_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert sup.stop_all() == {"sim": 0}
    assert "stopped" in child.log_file.read_text()
    assert not alive(child.proc.pid)
