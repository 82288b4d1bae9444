"""The gateway's HJ 212 listener: data loggers connect over TCP and push packets.

Each logger is configured by its MN, password and SM4 key (``[[gateway.hj212.loggers]]``) and
speaks for one registry device, whose profile maps factor codes to metrics (``[hj212.factors]``).
A data upload (real-time 2011, minute 2051, hour 2061, day 2031) becomes one contract reading
per packet and goes into the same durable spool as the Modbus readings, so it inherits their
guarantees (seq, persistence, publishing). Per packet:

- a bad CRC is answered ``9011`` with ``QnRtn=9`` when its QN can be read, and never stored;
- an unknown MN is answered ``QnRtn=4``, a wrong password ``QnRtn=3``; nothing is stored;
- an upload that asks for a reply (Flag bit 0) is answered ``9014`` once its reading is committed
  to the spool (on disk): a logger that got its 9014 can forget the packet;
- the 2025 heartbeat ``9015`` is answered ``9013``; an unknown CN is logged and ignored;
- a retry with the same (MN, QN, CN) is answered again but stored once;
- ``RF=1`` (a re-sent backlog packet) is stored as a reading marked ``resent``;
- on a connection's first packet from a logger, the host commands its configuration asks for
  are sent (1012 clock, 1062 / 1064 intervals, 1000 timeout and retries), and the clock is set
  again when live data comes with a time further off than ``clock_tolerance_s``;
  :meth:`Hj212Listener.command` sends any request and collects its 9011 / upload / 9012.
- the packet's data flags (N, F, M, S, D, C, T, B) become the metrics' flags; a value that is
  not a number is stored as null with flag D.

Every refusal is logged (``hj212.refused`` with its reason) and counted in :attr:`refused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway import hj212
from gateway.hj212_commands import CommandResult, Exchange, QnClock, china_time
from gateway.spool import Sample
from weijian.config import Hj212Logger, Hj212Settings
from weijian.contract import CATALOGUE, Flag, Kind, MetricValue
from weijian.device_profile import DeviceProfile

__all__ = ["Hj212Listener", "LoggerTarget", "NotConnected"]

log = logging.getLogger(__name__)

# Data uploads and the suffix that carries their value.
_VALUE_SUFFIX = {"2011": "Rtd", "2051": "Avg", "2061": "Avg", "2031": "Avg"}
_QNRTN_PW, _QNRTN_MN, _QNRTN_CRC = 3, 4, 9
_MAX_BUFFER = 64 * 1024  # bytes one connection may hold unframed before it is cut
_SEEN = 10_000  # (MN, QN, CN) remembered for de-duplication
_CLOCK_AGAIN_S = 600.0  # a clock found off again is set at most this often
_REPLIES = frozenset({"9011", "9012"})
_DATA_TIME = re.compile(r"DataTime=([0-9]{14})")


class NotConnected(LookupError):
    """The logger has no open connection to this gateway (commands go over its connection)."""


@dataclass(frozen=True)
class LoggerTarget:
    """A configured logger, resolved against the registry and its device's profile."""

    config: Hj212Logger
    kind: Kind
    profile: DeviceProfile
    metrics: tuple[str, ...]

    @property
    def key(self) -> bytes | None:
        """The SM4 key, if the logger encrypts."""
        return bytes.fromhex(self.config.key.get_secret_value()) if self.config.key else None


@dataclass
class _Session:
    """A logger's current connection: where its commands go and how it speaks."""

    mn: str
    writer: asyncio.StreamWriter
    peer: str
    edition: hj212.Edition
    st: str
    connected_at: datetime
    last_packet_at: datetime
    packets: int = 0
    pending: dict[str, Exchange] = field(default_factory=dict)  # by QN
    clock_set_at: float | None = None  # monotonic time of the last 1012
    commands: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10))

    def as_dict(self) -> dict[str, Any]:
        return {"mn": self.mn, "peer": self.peer, "edition": self.edition.name,
                "connected_at": self.connected_at.isoformat(),
                "last_packet_at": self.last_packet_at.isoformat(),
                "packets": self.packets, "commands": list(self.commands)}


class Hj212Listener:
    """The TCP server; :meth:`start` binds, :meth:`close` stops it and its connections."""

    def __init__(self, settings: Hj212Settings, loggers: dict[str, LoggerTarget],
                 put: Callable[[Sample], asyncio.Future[None]],
                 forward: Callable[[bytes], None] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.now = now
        self._qn = QnClock(now)
        self._sessions: dict[str, _Session] = {}
        self._chores: set[asyncio.Task[None]] = set()
        self.loggers = loggers
        self.put = put
        self.forward = forward  # every accepted packet, unchanged, to the upstream queues
        self._forwarded: OrderedDict[tuple[str, str | None, str, int | None], None] = OrderedDict()
        self.refused: Counter[str] = Counter()
        self.stored = 0
        self.duplicates = 0
        self.not_stored: Counter[str] = Counter()  # uploads of a CN the logger's store_cn is not
        # (MN, QN, CN, PNO) of the uploads taken, with the commit of each
        self._seen: OrderedDict[tuple[str, str | None, str, int | None], asyncio.Future[None] | None] = (
            OrderedDict()
        )
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        """Listen on ``listen_host:listen_port`` (0: a free port, then in :attr:`port`)."""
        assert self.settings.listen_port is not None
        self._server = await asyncio.start_server(self._connection, self.settings.listen_host,
                                                  self.settings.listen_port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("hj212.listening", extra={"host": self.settings.listen_host, "port": self.port,
                                           "loggers": len(self.loggers)})

    async def close(self) -> None:
        """Stop accepting and close every connection."""
        if self._server is not None:
            self._server.close()
        for task in [*self._connections, *self._chores]:
            task.cancel()
        for task in [*self._connections, *self._chores]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        frames = hj212.FrameReader(key_for=self._key_for)
        reassembler = hj212.Reassembler()
        sessions: dict[str, _Session] = {}  # the loggers speaking on this connection
        try:
            while True:
                try:
                    async with asyncio.timeout(self.settings.idle_timeout_s):
                        data = await reader.read(65536)
                except TimeoutError:
                    return
                if not data:
                    return
                for item in frames.feed(data):
                    answer, committed = self._handle(item, reassembler, writer, sessions)
                    if committed is not None:
                        await committed  # answer an upload only once it is on disk
                    if answer:
                        writer.write(answer)
                if frames.buffered > _MAX_BUFFER:  # a peer that never frames a packet
                    self._refuse("oversized", peer, None)
                    return
                await writer.drain()
        except (ConnectionError, OSError):
            return
        except asyncio.CancelledError:  # close(): end quietly (asyncio logs a cancelled handler)
            return
        except Exception:  # a packet that breaks the codec must not stop the listener
            log.exception("hj212.connection_failed", extra={"peer": str(peer)})
        finally:
            self._connections.discard(task)
            for mn, session in sessions.items():
                if self._sessions.get(mn) is session:
                    del self._sessions[mn]
                for exchange in session.pending.values():
                    exchange.result.error = "connection closed"
                    exchange.done.set()
                    exchange.answered.set()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _key_for(self, mn: str) -> bytes | None:
        target = self.loggers.get(mn)
        return target.key if target is not None else None

    def _refuse(self, reason: str, peer: object, packet: hj212.Packet | None) -> None:
        self.refused[reason] += 1
        log.warning("hj212.refused", extra={"reason": reason, "peer": str(peer),
                                            "mn": packet.mn if packet else None,
                                            "cn": packet.cn if packet else None})

    def _handle(
        self, item: hj212.Frame | hj212.FrameError, reassembler: hj212.Reassembler,
        writer: asyncio.StreamWriter, sessions: dict[str, _Session],
    ) -> tuple[bytes, asyncio.Future[None] | None]:
        """What one framed item does.

        Returns the reply to send (empty: none) and, for an upload being stored, the commit to
        wait for before sending it.
        """
        if isinstance(item, hj212.FrameError):
            packet = _try_parse(item.segment) if item.segment else None
            self._refuse(item.reason, None, packet)
            if item.reason == "bad_crc" and packet is not None and packet.qn:
                return hj212.request_reply(packet, _QNRTN_CRC), None
            return b"", None
        packet = _try_parse(item.segment)
        if packet is None:
            self._refuse("malformed", None, None)
            return b"", None
        target = self.loggers.get(packet.mn)
        if target is None:
            self._refuse("unknown_mn", None, packet)
            return hj212.request_reply(packet, _QNRTN_MN), None
        if packet.pw != target.config.password.get_secret_value():
            self._refuse("wrong_password", None, packet)
            return hj212.request_reply(packet, _QNRTN_PW), None
        session = self._session(packet, target, writer, sessions)
        if packet.cn in _REPLIES or (packet.qn in session.pending and packet.cn not in _VALUE_SUFFIX):
            # Answers to this gateway's own requests: not the upstreams' business.
            self._answer(session, packet)
            upload = packet.wants_reply and packet.cn not in _REPLIES  # e.g. 1011 with the time
            return (hj212.data_reply(packet) if upload else b""), None
        if self.forward is not None and packet.key not in self._forwarded:  # a retry is not sent on twice
            self._forwarded[packet.key] = None
            if len(self._forwarded) > _SEEN:
                self._forwarded.popitem(last=False)
            self.forward(item.raw)
        if packet.cn == "9015":
            return hj212.notification_reply(packet), None
        if packet.cn == "1013":  # the logger asks for the time: acknowledge, then set its clock
            self._chore(self._set_clock(session, "asked"))
            return (hj212.notification_reply(packet) if packet.wants_reply else b""), None
        if packet.cn not in _VALUE_SUFFIX:
            log.info("hj212.ignored", extra={"mn": packet.mn, "cn": packet.cn})
            return b"", None
        reply = hj212.data_reply(packet) if packet.wants_reply else b""
        whole = reassembler.add(packet)
        if whole is None:
            return reply, None
        if whole.cn == "2011" and not whole.resent and target.config.set_clock:
            self._check_clock(session, whole)
        if whole.cn != target.config.store_cn:
            self.not_stored[whole.cn] += 1
            return reply, None
        committed = None
        if whole.key in self._seen:
            self.duplicates += 1  # a retry: answer again (once the first copy is on disk), store once
            first = self._seen[whole.key]
            committed = first if first is not None and not first.done() else None
        else:
            self._seen[whole.key] = None
            if len(self._seen) > _SEEN:
                self._seen.popitem(last=False)
            sample = self._sample(whole, target)
            if sample is None:
                self._refuse("no_data", None, whole)
            else:
                committed = self.put(sample)
                self._seen[whole.key] = committed
                self.stored += 1
        return reply, committed

    def _sample(self, packet: hj212.Packet, target: LoggerTarget) -> Sample | None:
        try:
            cp = hj212.parse_cp(packet.cp)
        except ValueError:
            return None
        if cp.data_time is None or target.profile.hj212 is None:
            return None
        suffix = _VALUE_SUFFIX[packet.cn]
        units = CATALOGUE[target.kind]
        metrics: dict[str, MetricValue] = {}
        for code, values in cp.factors.items():
            metric = target.profile.hj212.factors.get(code)
            if metric is None or metric not in target.metrics or suffix not in values:
                continue
            flag = _flag(values.get("Flag", "N"))
            try:
                value: float | None = float(values[suffix])
            except ValueError:
                value, flag = None, Flag.DEVICE_FAULT
            if value is not None and not math.isfinite(value):  # "NaN" and "inf" parse as floats
                value, flag = None, Flag.DEVICE_FAULT
            if value is None and flag is Flag.NORMAL:
                flag = Flag.DEVICE_FAULT
            metrics[metric] = MetricValue(value=value, unit=units[metric], flag=flag)
        if not metrics:
            return None
        c = target.config
        return Sample(c.site_id, c.device_id, target.kind, cp.data_time, metrics, resent=packet.resent)

    # --- sessions and host commands -------------------------------------------------------------

    def _session(self, packet: hj212.Packet, target: LoggerTarget, writer: asyncio.StreamWriter,
                 sessions: dict[str, _Session]) -> _Session:
        session = sessions.get(packet.mn)
        now = self.now()
        if session is None:  # the logger's first packet on this connection
            peer = str(writer.get_extra_info("peername"))
            session = _Session(packet.mn, writer, peer, packet.edition, packet.st or "21", now, now)
            sessions[packet.mn] = session
            self._sessions[packet.mn] = session  # a newer connection takes the commands over
            log.info("hj212.connected", extra={"mn": packet.mn, "peer": peer,
                                               "edition": packet.edition.name})
            if target.config.set_clock:
                session.clock_set_at = time.monotonic()  # the greeting sets it
            self._chore(self._greet(session, target))
        if packet.cn not in _REPLIES:
            session.edition = packet.edition
        session.packets += 1
        session.last_packet_at = now
        return session

    def _chore(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def _answer(self, session: _Session, packet: hj212.Packet) -> None:
        """A 9011 / 9012 / requested upload: hand it to the request with its QN."""
        try:
            cp = hj212.parse_cp(packet.cp)
        except ValueError:
            cp = hj212.CpData()
        qn = cp.fields.get("QN") or packet.qn  # replies carry the request's QN in CP (or the header)
        exchange = session.pending.get(qn or "")
        if exchange is None:
            log.info("hj212.unmatched_reply", extra={"mn": packet.mn, "cn": packet.cn, "qn": qn})
            return
        exchange.feed(packet, cp)

    async def _greet(self, session: _Session, target: LoggerTarget) -> None:
        """The commands the logger's configuration asks for, once per connection, in order."""
        c = target.config
        if c.set_clock:
            await self._set_clock(session, "connected")
        if c.rtd_interval_s is not None:
            await self._logged(session, "1062", {"RtdInterval": str(c.rtd_interval_s)})
        if c.min_interval_min is not None:
            await self._logged(session, "1064", {"MinInterval": str(c.min_interval_min)})
        if c.overtime_s is not None and c.recount is not None:
            await self._logged(session, "1000", {"OverTime": str(c.overtime_s), "ReCount": str(c.recount)})

    def _check_clock(self, session: _Session, packet: hj212.Packet) -> None:
        m = _DATA_TIME.search(packet.cp)
        if m is None:
            return
        try:
            data_time = hj212.parse_time(m.group(1))
        except ValueError:
            return  # not a real time: the packet is refused as no_data when it is stored
        off_s = (data_time - self.now()).total_seconds()
        if abs(off_s) <= self.settings.clock_tolerance_s:
            return
        if session.clock_set_at is not None and time.monotonic() - session.clock_set_at < _CLOCK_AGAIN_S:
            return
        session.clock_set_at = time.monotonic()
        log.warning("hj212.clock_off", extra={"mn": session.mn, "off_s": round(off_s, 1)})
        self._chore(self._set_clock(session, "clock off"))

    async def _set_clock(self, session: _Session, why: str) -> None:
        session.clock_set_at = time.monotonic()
        await self._logged(session, "1012", {"SystemTime": china_time(self.now())}, why=why)

    async def _logged(self, session: _Session, cn: str, cp: dict[str, str], why: str = "connected") -> None:
        result = await self._request(session, cn, cp)
        entry = {"why": why, **result.as_dict()}
        session.commands.append(entry)
        (log.info if result.ok else log.warning)("hj212.command", extra=entry)

    async def command(self, mn: str, cn: str, cp: dict[str, str]) -> CommandResult:
        """Send a request to a connected logger and wait for its answer.

        Raises:
            NotConnected: the logger has no open connection.
        """
        session = self._sessions.get(mn)
        if session is None:
            raise NotConnected(mn)
        result = await self._request(session, cn, cp)
        session.commands.append({"why": "operator", **result.as_dict()})
        log.info("hj212.command", extra={"why": "operator", **result.as_dict()})
        return result

    async def _request(self, session: _Session, cn: str, cp: dict[str, str]) -> CommandResult:
        """One request: sent, and sent again (same QN) while unanswered; then its 9012 awaited."""
        target = self.loggers[session.mn]
        qn = self._qn.next()
        text = ";".join(f"{k}={v}" for k, v in cp.items())
        result = CommandResult(mn=session.mn, cn=cn, qn=qn, cp=text)
        flag = (session.edition.value << 2) | 1  # this edition, a reply wanted
        packet = hj212.encode_packet({"QN": qn, "ST": session.st, "CN": cn,
                                      "PW": target.config.password.get_secret_value(), "MN": session.mn,
                                      "Flag": flag}, text)
        exchange = Exchange(result)
        session.pending[qn] = exchange
        timeout = self.settings.command_timeout_s
        try:
            for _ in range(1 + self.settings.command_retries):
                result.attempts += 1
                try:
                    session.writer.write(packet)
                    await session.writer.drain()
                except (ConnectionError, OSError) as exc:
                    result.error = f"connection lost: {exc}"
                    return result
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await exchange.answered.wait()
                    break
            else:
                result.error = f"no answer in {result.attempts} attempts of {timeout:g} s"
                return result
            try:
                async with asyncio.timeout(timeout * (1 + self.settings.command_retries)):
                    await exchange.done.wait()
            except TimeoutError:
                if not result.data:
                    result.error = "no execution result (9012)"
            return result
        finally:
            session.pending.pop(qn, None)

    def status(self) -> dict[str, Any]:
        """The loggers configured and, for those connected, their session."""
        return {"loggers": [
            {"mn": mn, "site_id": t.config.site_id, "device_id": t.config.device_id,
             "connected": mn in self._sessions,
             **({"session": self._sessions[mn].as_dict()} if mn in self._sessions else {})}
            for mn, t in self.loggers.items()
        ], "stored": self.stored, "duplicates": self.duplicates, "refused": dict(self.refused),
            "not_stored": dict(self.not_stored)}


def _try_parse(segment: bytes) -> hj212.Packet | None:
    try:
        return hj212.parse_packet(segment)
    except (ValueError, UnicodeDecodeError):
        return None


_FLAGS = {f.value: f for f in Flag}


def _flag(text: str) -> Flag:
    return _FLAGS.get(text, Flag.DEVICE_FAULT)  # a flag outside HJ 212 Table 8: distrust the value
