"""A supervised child dies with its supervisor (``weijian demo`` and the test harness).

The supervisor (:class:`weijian.demo.supervise.Supervisor`) sets ``WEIJIAN_SUPERVISOR_PID`` in
each child's environment; the CLI calls :func:`die_with_parent_if_asked` first thing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["PARENT_ENV", "die_with_parent_if_asked"]

_PR_SET_PDEATHSIG = 1
PARENT_ENV = "WEIJIAN_SUPERVISOR_PID"


def die_with_parent_if_asked() -> None:
    """In a supervised child: ask the kernel to SIGKILL us when the supervisor dies.

    Called first thing by the CLI. Done in the child rather than in ``preexec_fn``, which is
    unsafe in a parent with threads. If the supervisor already died before the request took
    effect, exit at once.
    """
    parent = os.environ.get(PARENT_ENV)
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # the supervisor's own cleanup still stops us
    if os.getppid() != int(parent):
        os._exit(1)
