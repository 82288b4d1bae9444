"""Modbus RTU transport: one RS-485 line behind a pseudo-terminal, several unit ids on it.

The simulator holds the pty master; a gateway opens the slave path (``/dev/pts/N``) with
pyserial exactly as it would open ``/dev/ttyUSB0``. As on a real half-duplex line, the
devices answer one request at a time, only the addressed unit answers, broadcasts (unit 0)
and requests for absent units get no answer, and a frame with a bad CRC is discarded
silently. Bytes that form no request are dropped once the line has been quiet for the
inter-frame gap. Faults act on bytes: a garbled answer has flipped bits (its CRC no longer
matches) and a bad-CRC answer has an intact body and a wrong CRC.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import tty
from collections.abc import Mapping

from firmware_sim.device import SimulatedDevice
from firmware_sim.modbus import crc16, rtu_frame, rtu_request_length

__all__ = ["RtuLine"]

log = logging.getLogger(__name__)

# A pty has no baud rate, so the gap that ends a partial frame is a fixed, generous time
# (at 9600 baud 3.5 characters last 4 ms; pty scheduling jitter is larger).
_SILENCE_S = 0.05


class RtuLine:
    """An RS-485 line with the devices on it, served through a pseudo-terminal.

    Args:
        line_id: the scenario's name for the line.
        devices: unit id -> device.
        seed: seeds the bit flips of garbled answers, so runs repeat.
    """

    def __init__(self, line_id: str, devices: Mapping[int, SimulatedDevice], seed: int = 0) -> None:
        self.line_id = line_id
        self.devices = dict(devices)
        self.path = ""
        self.crc_errors = 0  # requests discarded for a bad CRC
        self.frames_answered = 0
        self._random = random.Random(seed)
        self._master = -1
        self._slave = -1
        self._buffer = bytearray()
        self._silence: asyncio.TimerHandle | None = None
        self._busy_until = 0.0
        self._pending: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Open the pty pair and start listening; afterwards :attr:`path` is the slave path."""
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        # Raw mode on the slave: no echo, no CR/LF translation, no signals from 0x03 bytes.
        # We keep our slave descriptor open so the master never reads EIO between clients.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._loop.add_reader(self._master, self._on_readable)

    async def close(self) -> None:
        """Stop serving and close both ends of the pty."""
        if self._loop is None:
            return
        self._loop.remove_reader(self._master)
        for handle in (*self._pending, self._silence):
            if handle is not None:
                handle.cancel()
        self._pending.clear()
        os.close(self._master)
        os.close(self._slave)
        self._loop = None

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EIO: no slave open; cannot happen while we hold ours
            log.debug("rtu.read_failed", extra={"line": self.line_id, "error": str(exc)})
            return
        self._buffer += data
        assert self._loop is not None
        if self._silence is not None:
            self._silence.cancel()
        self._silence = self._loop.call_later(_SILENCE_S, self._on_silence)
        self._parse()

    def _on_silence(self) -> None:
        self._silence = None
        if self._buffer:
            log.debug("rtu.dropped_partial", extra={"line": self.line_id, "bytes": len(self._buffer)})
            self._buffer.clear()

    def _parse(self) -> None:
        while self._buffer:
            length = rtu_request_length(self._buffer)
            if length is None or length == 0 or len(self._buffer) < length:
                return  # unknown function code: wait for the silence to discard it
            frame = bytes(self._buffer[:length])
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                # A slave cannot resynchronise inside a corrupt burst: drop it all.
                self.crc_errors += 1
                self._buffer.clear()
                return
            del self._buffer[:length]
            self._dispatch(frame[0], frame[1:-2])

    def _dispatch(self, unit: int, pdu: bytes) -> None:
        device = self.devices.get(unit)
        if device is None:  # broadcast, or another device's address: not ours to answer
            return
        reply = device.respond(pdu)
        if reply.pdu is None:
            return
        frame = bytearray(rtu_frame(unit, reply.pdu))
        if reply.wire.garbled:
            for i in self._random.sample(range(1, len(frame) - 2), k=min(3, len(frame) - 3)):
                frame[i] ^= 1 << self._random.randrange(8)
        if reply.wire.bad_crc:
            frame[-2] ^= 0xFF
            frame[-1] ^= 0x5A
        assert self._loop is not None
        now = self._loop.time()
        at = max(now + reply.wire.delay_s, self._busy_until)
        self._busy_until = at
        if at <= now:
            self._write(bytes(frame))
        else:
            handle = self._loop.call_at(at, self._write_later, bytes(frame))
            self._pending.add(handle)

    def _write_later(self, frame: bytes) -> None:
        self._pending = {h for h in self._pending if not h.cancelled() and h.when() > self._now()}
        self._write(frame)

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def _write(self, frame: bytes) -> None:
        try:
            written = os.write(self._master, frame)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError as exc:
            log.debug("rtu.write_failed", extra={"line": self.line_id, "error": str(exc)})
            return
        if written < len(frame):
            # Nobody is reading the line and the pty buffer is full: the bytes are lost,
            # as they would be on a wire with no receiver.
            log.debug("rtu.output_dropped", extra={"line": self.line_id, "bytes": len(frame)})
            return
        self.frames_answered += 1
