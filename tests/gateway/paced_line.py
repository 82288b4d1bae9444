"""A paced RS-485 wire between the gateway and a simulated line, for measuring line timing.

The gateway opens one end of a pty pair of ours; the instruments are firmware_sim's pty. A
relay thread moves whole frames between the two as a half-duplex wire would: one frame at a
time, each taking ``len * character time`` at the line's format, and logs when every frame
started and ended on the wire. So the silence the gateway keeps between frames is measured in
the same clock as the bytes, not inferred from its logs.

The relay also checks the format the gateway set on its port (speed, data bits, parity,
stop bits): a frame sent in another format is dropped, as an instrument would fail to decode
it. A Linux pty refuses parity, so the gateway opens ``url`` (``paced://<pty>``, see
``protocol_paced``), which records the format asked for and sets the pty to what it takes.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Iterable
from dataclasses import dataclass

import serial

from gateway.acquire import SerialFormat
from tests.gateway.protocol_paced import REQUESTED

if "tests.gateway" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("tests.gateway")


@dataclass(frozen=True)
class Frame:
    """One frame on the wire: who sent it, when it started and ended (monotonic), its bytes."""

    sender: str  # "gateway" or "instrument"
    start: float
    end: float
    data: bytes


class PacedLine:
    """The relay. ``url`` is what the gateway's ``serial`` key names.

    Args:
        instrument_path: firmware_sim's pty slave for the line.
        line: the instruments' format; the gateway's port must match its speed and stop bits.
        corrupt: zero-based indices of instrument answers whose CRC is spoiled on the wire.
    """

    def __init__(self, instrument_path: str, line: SerialFormat, corrupt: Iterable[int] = ()) -> None:
        self.line = line
        self.corrupt = set(corrupt)
        self.frames: list[Frame] = []
        self.refused: list[str] = []  # gateway frames dropped for a wrong port setting
        self._gw, self._gw_slave = os.openpty()
        tty.setraw(self._gw_slave)
        self.path = os.ttyname(self._gw_slave)
        self.url = f"paced://{self.path}"
        self._inst = os.open(instrument_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._inst)
        os.set_blocking(self._gw, False)
        self._answers = 0
        self._free_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"paced-{self.path}", daemon=True)

    def __enter__(self) -> PacedLine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for fd in (self._gw, self._gw_slave, self._inst):
            with contextlib.suppress(OSError):
                os.close(fd)

    def snapshot(self) -> list[Frame]:
        with self._lock:
            return list(self.frames)

    def _port_setting(self) -> SerialFormat | None:
        asked = REQUESTED.get(self.path)
        if asked is None:
            return None
        baudrate, bytesize, parity, stopbits = asked
        return SerialFormat(baudrate, bytesize, parity, int(stopbits))

    def _read_frame(self, fd: int) -> bytes:
        """A chunk and whatever follows it within 1.5 characters (one frame, as a UART sees it)."""
        data = b""
        while True:
            try:
                data += os.read(fd, 4096)
            except BlockingIOError:
                pass
            except OSError:  # the gateway closed its end
                return data
            ready, _, _ = select.select([fd], [], [], 1.5 * self.line.char_s)
            if not ready:
                return data

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._gw, self._inst], [], [], 0.02)
            for fd in ready:
                arrived = time.monotonic()
                data = self._read_frame(fd)
                if data:
                    self._carry(fd, data, arrived)

    def _carry(self, fd: int, data: bytes, arrived: float) -> None:
        from_gateway = fd == self._gw
        if from_gateway:
            port = self._port_setting()
            if port != self.line:
                self.refused.append(f"port set to {port}; the line is {self.line}")
                return
        else:
            if self._answers in self.corrupt:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            self._answers += 1
        start = max(arrived, self._free_at)
        end = start + len(data) * self.line.char_s
        delay = end - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with contextlib.suppress(OSError):
            os.write(self._inst if from_gateway else self._gw, data)
        self._free_at = end
        with self._lock:
            self.frames.append(Frame("gateway" if from_gateway else "instrument", start, end, data))
