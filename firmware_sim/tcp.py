"""Modbus TCP transport: one listening socket serving one or more unit ids.

An asyncio ``Protocol`` per connection parses MBAP frames (transaction id, protocol id 0,
length, unit id) and answers in order. A slow answer is scheduled with ``call_later``; later
requests on the same connection queue behind it, as on a real single-threaded instrument.
A silent device reads requests and never answers, so the client times out. A request for a
unit id the endpoint does not host is answered with exception 0x0B (gateway target device
failed to respond), as Modbus TCP gateways do.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Mapping

from firmware_sim.device import SimulatedDevice
from firmware_sim.modbus import ExceptionCode, exception_pdu

__all__ = ["TcpEndpoint"]

log = logging.getLogger(__name__)

_MBAP = struct.Struct(">HHHB")
_MAX_ADU = 260  # Modbus TCP: 7-byte MBAP header + at most 253 bytes of PDU


class _Connection(asyncio.Protocol):
    def __init__(self, endpoint: TcpEndpoint) -> None:
        self.endpoint = endpoint
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy_until = 0.0  # loop time the previous (delayed) answer goes out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.endpoint.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.endpoint.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 7:
            tid, protocol, length, unit = _MBAP.unpack_from(self.buffer)
            if protocol != 0 or not 2 <= length <= _MAX_ADU - 6:
                # Not Modbus: an instrument drops such a connection.
                log.debug("tcp.bad_header", extra={"port": self.endpoint.port})
                if self.transport is not None:
                    self.transport.close()
                self.buffer.clear()
                return
            if len(self.buffer) < 6 + length:
                return
            pdu = bytes(self.buffer[7 : 6 + length])
            del self.buffer[: 6 + length]
            self._handle(tid, unit, pdu)

    def _handle(self, tid: int, unit: int, pdu: bytes) -> None:
        device = self.endpoint.device_for(unit)
        if device is None:
            fc = pdu[0] if pdu else 0
            self._send(tid, unit, exception_pdu(fc, ExceptionCode.GATEWAY_TARGET_FAILED), 0.0)
            return
        reply = device.respond(pdu)
        if reply.pdu is not None:
            self._send(tid, unit, reply.pdu, reply.wire.delay_s)

    def _send(self, tid: int, unit: int, pdu: bytes, delay_s: float) -> None:
        adu = _MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now + delay_s, self.busy_until)
        if at <= now:
            self._write(adu)
        else:
            self.busy_until = at
            loop.call_at(at, self._write, adu)

    def _write(self, adu: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(adu)


class TcpEndpoint:
    """A Modbus TCP server socket for the devices behind one port.

    Args:
        devices: unit id -> device. With a single device, unit ids 0 and 255 also reach it
            (Modbus TCP devices commonly ignore the unit id).
        host: address to bind (loopback by default).
        port: port to bind; 0 picks a free one, see :attr:`port` after :meth:`start`.
    """

    def __init__(
        self, devices: Mapping[int, SimulatedDevice], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.devices = dict(devices)
        self.host = host
        self.port = port
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    def device_for(self, unit: int) -> SimulatedDevice | None:
        """The device that answers ``unit``, if any."""
        device = self.devices.get(unit)
        if device is None and len(self.devices) == 1 and unit in (0, 255):
            device = next(iter(self.devices.values()))
        return device

    async def start(self) -> None:
        """Bind and start accepting; afterwards :attr:`port` is the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop accepting, drop open connections and wait until the socket is closed."""
        if self._server is None:
            return
        self._server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        await self._server.wait_closed()
        self._server = None
