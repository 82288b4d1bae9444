"""HJ 212 host commands: what the platform asks of a data logger, and what it answered.

A request (a 1xxx parameter command) goes out with a fresh ``QN`` and Flag bit 0 set; the
logger answers ``9011`` with ``QnRtn`` (1: ready), may upload the asked-for values under the same
``QN`` (``1011 SystemTime``, ``1061 RtdInterval``, ``1063 MinInterval``), and ends with ``9012``
with ``ExeRtn`` (1: success). :class:`Exchange` collects one such conversation; the listener
feeds it the logger's packets and :meth:`Exchange.result` says how it ended.

:data:`NAMED` is the operator's vocabulary of ``weijian gateway hj212 send``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from gateway import hj212

__all__ = ["NAMED", "CommandResult", "Exchange", "NamedCommand", "QnClock", "china_time"]

_CHINA = timezone(timedelta(hours=8))

QN_RTN = {1: "ready", 2: "rejected", 3: "PW error", 4: "MN error", 5: "ST error", 6: "Flag error",
          7: "QN error", 8: "CN error", 9: "CRC error", 100: "unknown error"}
EXE_RTN = {1: "success", 2: "failed", 3: "request condition error", 4: "communication timeout",
           5: "system busy", 6: "system fault", 100: "no data"}


def china_time(at: datetime) -> str:
    """``YYYYMMDDhhmmss`` in China time, as HJ 212 writes times."""
    return at.astimezone(_CHINA).strftime("%Y%m%d%H%M%S")


class QnClock:
    """Request numbers: China time to the millisecond, strictly increasing within a process."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self._last = 0

    def next(self) -> str:
        """A QN no earlier request of this gateway had."""
        at = self._now().astimezone(_CHINA)
        ms = int(at.strftime("%Y%m%d%H%M%S")) * 1000 + at.microsecond // 1000
        self._last = max(ms, self._last + 1)
        return str(self._last)


@dataclass(frozen=True)
class NamedCommand:
    """An operator's command: its CN, the CP fields it takes, and what it asks back."""

    cn: str
    params: tuple[str, ...]  # CP field names, filled from the operator's arguments in order
    summary: str


NAMED: dict[str, NamedCommand] = {
    "set-clock": NamedCommand("1012", ("SystemTime",), "set the logger's clock (default: now)"),
    "get-clock": NamedCommand("1011", (), "read the logger's clock"),
    "set-rtd-interval": NamedCommand("1062", ("RtdInterval",), "real-time data interval, seconds (30-3600)"),
    "get-rtd-interval": NamedCommand("1061", (), "read the real-time data interval"),
    "set-min-interval": NamedCommand("1064", ("MinInterval",), "minute-data interval, minutes (1-30)"),
    "get-min-interval": NamedCommand("1063", (), "read the minute-data interval"),
    "set-timeout": NamedCommand("1000", ("OverTime", "ReCount"), "answer timeout (s) and retries"),
}


@dataclass
class CommandResult:
    """How one request ended. ``error`` is set when there was no complete answer."""

    mn: str
    cn: str
    qn: str
    cp: str
    qn_rtn: int | None = None
    exe_rtn: int | None = None
    data: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Accepted and, where the logger reported the execution, executed successfully."""
        if self.error is not None or self.qn_rtn not in (None, 1):
            return False
        return self.exe_rtn == 1 or (self.exe_rtn is None and self.qn_rtn == 1 and bool(self.data))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view, with the meaning of each return code."""
        return {
            "mn": self.mn, "cn": self.cn, "qn": self.qn, "cp": self.cp, "ok": self.ok,
            "qn_rtn": self.qn_rtn, "qn_rtn_text": QN_RTN.get(self.qn_rtn or 0),
            "exe_rtn": self.exe_rtn, "exe_rtn_text": EXE_RTN.get(self.exe_rtn or 0),
            "data": self.data, "attempts": self.attempts, "error": self.error,
        }


class Exchange:
    """One request's conversation with a logger (9011, uploads under its QN, 9012)."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        self.answered = asyncio.Event()  # 9011 (or, from loggers that skip it, 9012) came
        self.done = asyncio.Event()  # 9012 came, or 9011 refused the request

    def feed(self, packet: hj212.Packet, cp: hj212.CpData) -> None:
        """Take a packet the logger sent under this request's QN."""
        r = self.result
        if packet.cn == "9011":
            r.qn_rtn = _int(cp.fields.get("QnRtn"))
            self.answered.set()
            if r.qn_rtn != 1:
                self.done.set()
        elif packet.cn == "9012":
            r.exe_rtn = _int(cp.fields.get("ExeRtn"))
            self.answered.set()
            self.done.set()
        elif packet.cn == r.cn[:3] + "1" or packet.cn == r.cn:  # 1011 answers 1011, etc.
            r.data.update(cp.fields)
            if cp.data_time is not None:
                r.data.setdefault("DataTime", china_time(cp.data_time))


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
