"""Simulated HJ 212 data loggers (数采仪), 2017 and 2025 editions, with the field's faults.

A :class:`SimulatedLogger` connects to a platform (the gateway's listener) over TCP and uploads
real-time (2011), minute (2051), hour (2061) and day (2031) data for a span of simulated time,
as fast as the platform answers each upload's 9014: a simulated day takes seconds. It answers
the host's commands (9011, the asked-for values, 9012) and applies them: 1012 sets its clock,
1062 / 1064 its intervals, 1000 its answer timeout and retries.

Field faults (:class:`Faults`): packets first sent with a bad CRC (the logger sends them again
after the platform's 9011 ``QnRtn=9``), packets split into pieces and joined with others across
TCP segments, retries with the same QN (as after a lost 9014), a link outage whose backlog is
re-sent afterwards (``RF=1`` in 2025, after the live data as HJ 212-2025 §8.1.2 asks), SM4
encryption of CP, a wrong password, and a clock that is off until the platform sets it.

Everything the logger meant to deliver is recorded in :attr:`SimulatedLogger.sent`, once per
upload however often it went on the wire, so a test can compare what was stored with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gateway import hj212
from gateway.hj212_commands import china_time

__all__ = ["Faults", "LoggerSpec", "SimulatedLogger", "Upload"]

_FLAGS = "NFMSDCTB"
_SUFFIX = {"2011": "Rtd", "2051": "Avg", "2061": "Avg", "2031": "Avg"}


@dataclass(frozen=True)
class Faults:
    """What goes wrong, as shares of packets (0-1) or spans of simulated time."""

    bad_crc: float = 0.0  # sent first with a corrupted CRC, then again after 9011 QnRtn=9
    split: bool = False  # every packet written in 1-4 pieces, each its own TCP segment
    join: bool = False  # a tick's packets (and a retry) written together in one segment
    retry: float = 0.0  # sent twice with the same QN (the first 9014 "lost")
    flags: float = 0.0  # values flagged other than N (M, D, C, F, T, S, B at random)
    outage: tuple[timedelta, timedelta] | None = None  # link down from/to (after the start)


@dataclass(frozen=True)
class LoggerSpec:
    """One logger: identity, edition, what it measures and how often."""

    mn: str
    password: str = "123456"
    edition: hj212.Edition = hj212.Edition.HJ212_2017
    st: str = "21"
    key: bytes | None = None  # SM4 key: CP of 2xxx uploads encrypted
    factors: dict[str, tuple[float, float]] = field(  # code -> (mean, daily amplitude)
        default_factory=lambda: {"w01001": (7.2, 0.3), "w01003": (0.4, 0.2), "w01010": (18.0, 3.0)})
    rtd_interval_s: int = 30
    min_interval_min: int = 10
    clock_offset_s: float = 0.0  # the logger's clock is this far off until a 1012
    overtime_s: float = 5.0  # wait this long for a 9014 before sending again
    recount: int = 3
    faults: Faults = Faults()


@dataclass(frozen=True)
class Upload:
    """One upload as the logger meant it: its values as sent (text) with their flags."""

    cn: str
    qn: str
    data_time: datetime  # UTC
    values: dict[str, tuple[str, str]]  # code -> (value text, flag)
    resent: bool = False


class SimulatedLogger:
    """A logger of :class:`LoggerSpec`; see the module's doc."""

    def __init__(self, spec: LoggerSpec, seed: int = 0) -> None:
        self.spec = spec
        self.rng = random.Random(f"{spec.mn}/{seed}")
        self.rtd_interval_s = spec.rtd_interval_s
        self.min_interval_min = spec.min_interval_min
        self.overtime_s = spec.overtime_s
        self.recount = spec.recount
        self.clock_offset_s = spec.clock_offset_s
        self.sent: list[Upload] = []
        self.acked: set[str] = set()  # QNs answered 9014
        self.refusals: Counter[int] = Counter()  # QnRtn of the platform's 9011s
        self.commands: list[tuple[str, dict[str, str]]] = []  # host requests, in order
        self.wire_packets = 0
        self._qn = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._listen: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[int]] = {}  # QN -> 0 (9014) or QnRtn (9011)

    # --- the link --------------------------------------------------------------------------------

    async def connect(self, host: str, port: int) -> None:
        """Open the TCP connection and start answering the platform."""
        self._reader, self._writer = await asyncio.open_connection(host, port)
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._listen = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        """Close the connection."""
        if self._listen is not None:
            self._listen.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listen
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._writer = self._reader = self._listen = None

    def now(self) -> datetime:
        """The logger's own clock (wall time plus its offset)."""
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset_s)

    async def _write(self, data: bytes) -> None:
        assert self._writer is not None
        if not self.spec.faults.split:
            self._writer.write(data)
            await self._writer.drain()
            return
        cuts = sorted(self.rng.sample(range(1, len(data)), min(self.rng.randrange(0, 4), len(data) - 1)))
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            self._writer.write(data[a:b])
            await self._writer.drain()
            await asyncio.sleep(0.0005)  # its own segment (TCP_NODELAY)

    async def _read(self) -> None:
        assert self._reader is not None
        frames = hj212.FrameReader()
        while True:
            data = await self._reader.read(65536)
            if not data:
                for fut in self._waiting.values():
                    if not fut.done():
                        fut.set_exception(ConnectionResetError("the platform closed the connection"))
                return
            for item in frames.feed(data):
                if isinstance(item, hj212.Frame):
                    await self._platform(hj212.parse_packet(item.segment))

    async def _platform(self, packet: hj212.Packet) -> None:
        """A packet from the platform: an answer to an upload, or a request to carry out."""
        cp = hj212.parse_cp(packet.cp)
        if packet.cn in ("9014", "9011", "9013"):
            qn = cp.fields.get("QN") or packet.qn or ""
            fut = self._waiting.get(qn)
            code = 0 if packet.cn != "9011" else int(cp.fields.get("QnRtn", "100"))
            if packet.cn == "9014":
                self.acked.add(qn)
            if fut is not None and not fut.done():
                fut.set_result(code)
            return
        self.commands.append((packet.cn, dict(cp.fields)))
        await self._send(self._packet("9011", f"QN={packet.qn};QnRtn=1", st="91", qn=None))
        exe = 1
        if packet.cn == "1012" and "SystemTime" in cp.fields:
            told = hj212.parse_time(cp.fields["SystemTime"])
            self.clock_offset_s = (told - datetime.now(UTC)).total_seconds()
        elif packet.cn == "1062":
            self.rtd_interval_s = int(cp.fields.get("RtdInterval", self.rtd_interval_s))
        elif packet.cn == "1064":
            self.min_interval_min = int(cp.fields.get("MinInterval", self.min_interval_min))
        elif packet.cn == "1000":
            self.overtime_s = float(cp.fields.get("OverTime", self.overtime_s))
            self.recount = int(cp.fields.get("ReCount", self.recount))
        elif packet.cn in ("1011", "1061", "1063"):
            value = {"1011": f"SystemTime={china_time(self.now())}",
                     "1061": f"RtdInterval={self.rtd_interval_s}",
                     "1063": f"MinInterval={self.min_interval_min}"}[packet.cn]
            await self._send(self._packet(packet.cn, value, qn=packet.qn))
        else:
            exe = 2
        await self._send(self._packet("9012", f"QN={packet.qn};ExeRtn={exe}", st="91", qn=None))

    # --- packets ---------------------------------------------------------------------------------

    def next_qn(self, at: datetime) -> str:
        """A QN from the logger's clock, increasing."""
        ms = int(china_time(at)) * 1000 + at.microsecond // 1000
        self._qn = max(ms, self._qn + 1)
        return str(self._qn)

    def _packet(self, cn: str, cp: str, *, qn: str | None, st: str | None = None, reply: bool = False,
                resent: bool = False) -> bytes:
        edition = self.spec.edition
        flag = (edition.value << 2) | (1 if reply else 0)
        header = {"QN": qn, "ST": st or self.spec.st, "CN": cn, "PW": self.spec.password,
                  "MN": self.spec.mn, "Flag": flag if edition is not hj212.Edition.HJ212_2005 else None,
                  "RF": 1 if resent and edition is hj212.Edition.HJ212_2025 else None}
        key = self.spec.key if cn.startswith("2") else None
        return hj212.encode_packet(header, cp, key=key)

    async def _send(self, data: bytes) -> None:
        self.wire_packets += 1
        await self._write(data)

    def upload_packet(self, up: Upload) -> bytes:
        """The packet of an upload (a reply asked for)."""
        suffix = _SUFFIX[up.cn]
        body = ";".join(f"{c}-{suffix}={v},{c}-Flag={f}" for c, (v, f) in up.values.items())
        local = up.data_time + timedelta(seconds=self.clock_offset_s)
        return self._packet(up.cn, f"DataTime={china_time(local)};{body}", qn=up.qn, reply=True,
                            resent=up.resent)

    async def deliver(self, uploads: list[Upload]) -> int:
        """Send uploads (written together when ``join``) and wait for each one's 9014.

        Faults apply: a bad CRC first, a retry with the same QN. Returns how many were
        answered 9014; an upload refused (9011 QnRtn other than 9) is not sent again.
        """
        faults = self.spec.faults
        loop = asyncio.get_running_loop()
        futs = {up.qn: loop.create_future() for up in uploads}
        self._waiting.update(futs)
        chunks: list[bytes] = []
        for up in uploads:
            self.sent.append(up)
            packet = self.upload_packet(up)
            if self.rng.random() < faults.bad_crc:
                spoiled = bytearray(packet)
                spoiled[-3] = ord("0") if spoiled[-3] != ord("0") else ord("1")
                chunks.append(bytes(spoiled))
            else:
                chunks.append(packet)
            if self.rng.random() < faults.retry:
                chunks.append(packet)  # the same QN again
        if faults.join:
            self.wire_packets += len(chunks) - 1
            await self._send(b"".join(chunks))
        else:
            for chunk in chunks:
                await self._send(chunk)
        answered = 0
        for up in uploads:
            for _ in range(self.recount + 1):
                try:
                    async with asyncio.timeout(self.overtime_s):
                        code = await asyncio.shield(futs[up.qn])
                except TimeoutError:
                    await self._send(self.upload_packet(up))
                    continue
                if code == 9:  # the platform saw a bad CRC: send it again
                    futs[up.qn] = self._waiting[up.qn] = loop.create_future()
                    await self._send(self.upload_packet(up))
                    continue
                if code:
                    self.refusals[code] += 1
                else:
                    answered += 1
                break
            self._waiting.pop(up.qn, None)
        return answered

    # --- the data --------------------------------------------------------------------------------

    def _value(self, code: str, at: datetime) -> tuple[str, str]:
        mean, amplitude = self.spec.factors[code]
        phase = (at.timestamp() % 86_400) / 86_400 * 2 * math.pi
        value = mean + amplitude * math.sin(phase) + self.rng.gauss(0, amplitude / 20)
        flag = "N"
        if self.rng.random() < self.spec.faults.flags:
            flag = self.rng.choice(_FLAGS[1:])
        return f"{max(value, 0.0):.3f}", flag

    def _aggregate(self, cn: str, at: datetime, rtd: list[Upload]) -> Upload:
        values = {}
        for code in self.spec.factors:
            points = [u.values[code] for u in rtd]
            mean = sum(float(v) for v, _ in points) / len(points)
            bad = [f for _, f in points if f != "N"]  # abnormal if any real-time value was
            values[code] = (f"{mean:.3f}", bad[0] if bad else "N")
        return Upload(cn, self.next_qn(at), at, values)

    def timeline(self, start: datetime, end: datetime) -> list[list[Upload]]:
        """The uploads of ``[start, end)``, grouped by the tick that sends them (real-time first)."""
        ticks: list[list[Upload]] = []
        minute: list[Upload] = []
        hour: list[Upload] = []
        day: list[Upload] = []
        t = start
        step = timedelta(seconds=self.rtd_interval_s)
        while t < end:
            rtd = Upload("2011", self.next_qn(t), t, {c: self._value(c, t) for c in self.spec.factors})
            group = [rtd]
            minute.append(rtd)
            hour.append(rtd)
            day.append(rtd)
            nxt = t + step
            span = timedelta(minutes=self.min_interval_min)
            if _boundary(nxt, span):
                group.append(self._aggregate("2051", _floor(t, span), minute))
                minute = []
            if _boundary(nxt, timedelta(hours=1)):
                group.append(self._aggregate("2061", _floor(t, timedelta(hours=1)), hour))
                hour = []
            if _boundary(nxt + timedelta(hours=8), timedelta(days=1)):  # a China-time day
                group.append(self._aggregate("2031", _floor(t + timedelta(hours=8), timedelta(days=1))
                                             - timedelta(hours=8), day))
                day = []
            ticks.append(group)
            t = nxt
        return ticks

    async def run_span(self, host: str, port: int, start: datetime, end: datetime) -> None:
        """Upload ``[start, end)`` of simulated time; an outage in the faults cuts the link.

        During the outage the data is kept; afterwards the logger reconnects, sends the tick
        that is live first, then the backlog, marked ``RF=1`` in the 2025 edition.
        """
        outage = self.spec.faults.outage
        down = (start + outage[0], start + outage[1]) if outage else None
        backlog: list[Upload] = []
        await self.connect(host, port)
        try:
            for group in self.timeline(start, end):
                at = group[0].data_time
                if down is not None and down[0] <= at < down[1]:
                    if self._writer is not None:
                        await self.close()
                    backlog += group
                    continue
                if self._writer is None:
                    await self.connect(host, port)
                    await self.deliver(group)
                    resent = [Upload(u.cn, u.qn, u.data_time, u.values, resent=True) for u in backlog]
                    backlog = []
                    for i in range(0, len(resent), 8):
                        await self.deliver(resent[i : i + 8])
                    continue
                await self.deliver(group)
        finally:
            await self.close()

    async def send_live(self, host: str, port: int, count: int, every_s: float = 1.0) -> None:
        """Upload ``count`` real-time packets stamped by the logger's own clock, ``every_s`` apart."""
        await self.connect(host, port)
        try:
            for _ in range(count):
                at = datetime.now(UTC)
                values = {c: self._value(c, at) for c in self.spec.factors}
                up = Upload("2011", self.next_qn(self.now()), at, values)
                await self.deliver([up])
                await asyncio.sleep(every_s)
        finally:
            await self.close()


def _boundary(t: datetime, span: timedelta) -> bool:
    return t.timestamp() % span.total_seconds() == 0


def _floor(t: datetime, span: timedelta) -> datetime:
    s = span.total_seconds()
    return datetime.fromtimestamp(t.timestamp() // s * s, UTC)
