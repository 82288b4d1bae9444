"""A stand-in upstream platform for the HJ 212 forwarding tests and the acceptance run: a TCP
listener that records every packet it gets, as received, and answers as a platform does while it
is up: 9013 to a heartbeat (9015) or a time request (1013), 9014 to anything else.
Stopping it closes its listener and its open connections (down means down)."""

from __future__ import annotations

import asyncio

from gateway import hj212

__all__ = ["Upstream"]


class Upstream:
    """A platform on ``127.0.0.1:port``; :attr:`packets` holds the raw packets in arrival order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.packets: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.clients):
                writer.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = hj212.FrameReader()
        self.clients.add(writer)
        try:
            while data := await reader.read(65536):
                for item in frames.feed(data):
                    assert isinstance(item, hj212.Frame)
                    self.packets.append(item.raw)
                    packet = hj212.parse_packet(item.segment)
                    if packet.wants_reply:
                        notice = packet.cn in ("9015", "1013")
                        writer.write(hj212.notification_reply(packet) if notice else hj212.data_reply(packet))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.clients.discard(writer)
            writer.close()
