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
- the packet's data flags (N, F, M, S, D, C, T, B) become the metrics' flags; a value that is
  not a number is stored as null with flag D.

Every refusal is logged (``hj212.refused`` with its reason) and counted in :attr:`refused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway import hj212
from gateway.spool import Sample
from weijian.config import Hj212Logger, Hj212Settings
from weijian.contract import CATALOGUE, Flag, Kind, MetricValue
from weijian.device_profile import DeviceProfile

__all__ = ["Hj212Listener", "LoggerTarget"]

log = logging.getLogger(__name__)

# Data uploads and the suffix that carries their value.
_VALUE_SUFFIX = {"2011": "Rtd", "2051": "Avg", "2061": "Avg", "2031": "Avg"}
_QNRTN_PW, _QNRTN_MN, _QNRTN_CRC = 3, 4, 9
_MAX_BUFFER = 64 * 1024  # bytes one connection may hold unframed before it is cut
_SEEN = 10_000  # (MN, QN, CN) remembered for de-duplication


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


class Hj212Listener:
    """The TCP server; :meth:`start` binds, :meth:`close` stops it and its connections."""

    def __init__(self, settings: Hj212Settings, loggers: dict[str, LoggerTarget],
                 put: Callable[[Sample], asyncio.Future[None]],
                 forward: Callable[[bytes], None] | None = None) -> None:
        self.settings = settings
        self.loggers = loggers
        self.put = put
        self.forward = forward  # every accepted packet, unchanged, to the upstream queues
        self._forwarded: OrderedDict[tuple[str, str | None, str, int | None], None] = OrderedDict()
        self.refused: Counter[str] = Counter()
        self.stored = 0
        self.duplicates = 0
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
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
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
                    answer, committed = self._handle(item, reassembler)
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
        except Exception:  # a packet that breaks the codec must not stop the listener
            log.exception("hj212.connection_failed", extra={"peer": str(peer)})
        finally:
            self._connections.discard(task)
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
        self, item: hj212.Frame | hj212.FrameError, reassembler: hj212.Reassembler
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
        if self.forward is not None and packet.key not in self._forwarded:  # a retry is not sent on twice
            self._forwarded[packet.key] = None
            if len(self._forwarded) > _SEEN:
                self._forwarded.popitem(last=False)
            self.forward(item.raw)
        if packet.cn == "9015":
            return hj212.notification_reply(packet), None
        if packet.cn not in _VALUE_SUFFIX:
            log.info("hj212.ignored", extra={"mn": packet.mn, "cn": packet.cn})
            return b"", None
        reply = hj212.data_reply(packet) if packet.wants_reply else b""
        whole = reassembler.add(packet)
        if whole is None:
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
            if value is None and flag is Flag.NORMAL:
                flag = Flag.DEVICE_FAULT
            metrics[metric] = MetricValue(value=value, unit=units[metric], flag=flag)
        if not metrics:
            return None
        c = target.config
        return Sample(c.site_id, c.device_id, target.kind, cp.data_time, metrics)


def _try_parse(segment: bytes) -> hj212.Packet | None:
    try:
        return hj212.parse_packet(segment)
    except (ValueError, UnicodeDecodeError):
        return None


def _flag(text: str) -> Flag:
    try:
        return Flag(text)
    except ValueError:
        return Flag.DEVICE_FAULT  # a flag outside HJ 212 Table 8: distrust the value
