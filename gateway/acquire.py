"""Acquisition: Modbus links (TCP, RTU over a serial port) and the poll loops that use them.

One poller task per RS-485 line, holding the line for one transaction at a time with the
inter-frame silence before each request, serving several unit ids; one poller task per TCP
device. Each device has its own poll interval, timeout and retries. A failed poll yields a
sample whose values are null with flag ``B`` (or ``D`` for exception 4, the instrument
reporting its own failure), and the device is polled with exponential backoff until it
answers again. pymodbus exceptions stop in this module: they become :class:`DeviceError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pymodbus import ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.framer import FramerRTU
from pymodbus.pdu import ModbusPDU

from gateway.decode import decode_sample, failed_metrics, to_metric_values
from gateway.spool import Sample
from gateway.status import DeviceHealth, ErrorKind
from weijian.backoff import Backoff
from weijian.contract import Flag, Kind
from weijian.device_profile import DeviceProfile, ReadBlock, Table
from weijian.errors import DeviceError

__all__ = [
    "DeviceError",
    "DeviceTarget",
    "ModbusLink",
    "Poller",
    "SerialFormat",
]

log = logging.getLogger(__name__)

_Tracer = Callable[[bool, bytes], bytes]

# Modbus exception 4, SERVER DEVICE FAILURE: the instrument says it is broken (flag D).
_DEVICE_FAILURE = 4


@dataclass
class DeviceTarget:
    """One configured device, resolved against the registry and its profile."""

    site_id: str
    device_id: str
    kind: Kind
    profile: DeviceProfile
    metrics: tuple[str, ...]
    unit_id: int
    blocks: Sequence[ReadBlock]
    poll_interval_s: float
    timeout_s: float
    retries: int
    device_time: bool
    health: DeviceHealth = field(init=False)
    next_due: float = 0.0

    def __post_init__(self) -> None:
        self.health = DeviceHealth(self.key)

    @property
    def key(self) -> str:
        """``site_id/device_id``."""
        return f"{self.site_id}/{self.device_id}"


@dataclass(frozen=True, slots=True)
class SerialFormat:
    """A serial line's speed and character format (``9600 8E1``)."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"  # N, E or O
    stopbits: int = 1

    @property
    def char_s(self) -> float:
        """Time one character takes on the wire: start bit, data bits, parity, stop bits."""
        bits = 1 + self.bytesize + (self.parity != "N") + self.stopbits
        return bits / self.baudrate

    @property
    def t35_s(self) -> float:
        """The Modbus RTU inter-frame silence: 3.5 characters, fixed at 1.75 ms above 19,200 baud.

        Modbus over serial line specification v1.02, 2.5.1.1.
        """
        return 3.5 * self.char_s if self.baudrate <= 19200 else 0.00175

    def __str__(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


def _expected_length(function_code: int, count: int, head: bytes) -> int | None:
    """Length of an RTU answer to a read, from its first bytes (None: not enough to tell)."""
    if len(head) < 2:
        return None
    if head[1] & 0x80:  # exception answer: unit, function | 0x80, code, CRC
        return 5
    if head[1] != function_code:
        return None
    data = (count + 7) // 8 if function_code in (1, 2) else 2 * count
    return 5 + data


_EXCEPTION_NAMES: Final = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER DEVICE BUSY",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}


def describe_block(block: ReadBlock) -> str:
    """``function 3 (holding) at address 40, 4 registers: free_chlorine, ph`` for messages."""
    what = "bits" if block.table.is_bit else "registers"
    names = ", ".join(n.removeprefix("registers.") for n in block.names)
    return (f"function {block.function_code} ({block.table.value}) at address {block.start}, "
            f"{block.count} {what}: {names}")


class ModbusLink:
    """One pymodbus client: a TCP connection or a serial port; translates its errors.

    On a serial line it also keeps the line's timing: every request waits until the line has
    been silent for ``gap_s`` since the last byte sent or received (between the blocks of one
    device, between retries and between devices alike), and an answer that is complete but
    fails its CRC ends the request at once instead of at the timeout.

    Args:
        make_client: builds the pymodbus async client (``retries=0``) given the packet tracer.
        name: for logs (``tcp://host:port`` or the serial path).
        serial: the line's format (None on TCP).
        gap_s: the least silence between two frames (0 on TCP).
        where: the configuration key of the port, for connection errors.
    """

    def __init__(
        self,
        make_client: Callable[[_Tracer], AsyncModbusTcpClient | AsyncModbusSerialClient],
        name: str,
        *,
        serial: SerialFormat | None = None,
        gap_s: float = 0.0,
        where: str = "",
    ) -> None:
        self.client = make_client(self._trace)
        self.name = name
        self.serial = serial
        self.gap_s = gap_s
        self.where = where
        self.rx_bytes = 0  # bytes received during the current request
        self._rx = bytearray()
        self._quiet_at = 0.0  # monotonic time the line last fell silent
        self._expect: tuple[int, int] | None = None  # (function code, count) of the request
        self._bad_frame: asyncio.Future[None] | None = None

    @classmethod
    def tcp(cls, host: str, port: int, timeout_s: float) -> ModbusLink:
        """A Modbus TCP link."""
        return cls(
            lambda trace: AsyncModbusTcpClient(
                host, port=port, timeout=timeout_s, retries=0, trace_packet=trace
            ),
            f"tcp://{host}:{port}",
        )

    @classmethod
    def rtu(
        cls, path: str, line: SerialFormat, timeout_s: float, *, frame_gap_s: float = 0.0, where: str = ""
    ) -> ModbusLink:
        """A Modbus RTU link on a serial port (pyserial); the gap is at least 3.5 characters."""
        return cls(
            lambda trace: AsyncModbusSerialClient(
                path, baudrate=line.baudrate, bytesize=line.bytesize, parity=line.parity,
                stopbits=line.stopbits, timeout=timeout_s, retries=0, trace_packet=trace,
            ),
            path,
            serial=line,
            gap_s=max(frame_gap_s, line.t35_s),
            where=where,
        )

    def _trace(self, sending: bool, data: bytes) -> bytes:
        now = time.monotonic()
        if sending:
            # pymodbus hands the frame to the port now; it leaves the wire len * char later.
            self._quiet_at = now + len(data) * (self.serial.char_s if self.serial else 0.0)
            return data
        self._quiet_at = now
        self.rx_bytes += len(data)
        if self.serial is not None and self._expect is not None:
            self._rx += data
            self._check_crc()
        return data

    def _check_crc(self) -> None:
        """Fail the request now if the answer is complete and its CRC is wrong."""
        assert self._expect is not None
        length = _expected_length(*self._expect, bytes(self._rx[:2]))
        if length is None or len(self._rx) < length:
            return
        frame = bytes(self._rx[:length])
        crc = (frame[-2] << 8) | frame[-1]
        if not FramerRTU.check_CRC(frame[:-2], crc) and self._bad_frame and not self._bad_frame.done():
            self._bad_frame.set_result(None)

    def close(self) -> None:
        """Close the connection or port."""
        self.client.close()

    async def _line_silence(self) -> None:
        delay = self._quiet_at + self.gap_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _connect_failure(self, exc: BaseException | None) -> DeviceError:
        if self.serial is None:
            detail = f"{self.name}: cannot connect" + (f": {exc}" if exc else "")
            return DeviceError(ErrorKind.CONNECT, detail)
        problem = serial_port_problem(self.name, exc)
        where = self.where or "serial"
        return DeviceError(ErrorKind.CONNECT, f"{where} = {self.name!r}: cannot open the port: {problem}")

    async def read(self, block: ReadBlock, unit_id: int, timeout_s: float) -> list[int]:
        """Read one block.

        Returns:
            The register words, or the bits as 0/1, ``block.count`` of them.

        Raises:
            DeviceError: no connection, no answer in ``timeout_s``, an exception response,
                or a garbled answer.
        """
        if not self.client.connected:
            try:
                async with asyncio.timeout(timeout_s):
                    is_connected = await self.client.connect()
            except (TimeoutError, OSError, ModbusException, termios.error) as exc:
                # termios.error: the port refused the format (a pty refuses parity, for one)
                raise self._connect_failure(exc) from exc
            if not is_connected:
                raise self._connect_failure(None)
        call = {
            Table.COIL: self.client.read_coils,
            Table.DISCRETE_INPUT: self.client.read_discrete_inputs,
            Table.HOLDING: self.client.read_holding_registers,
            Table.INPUT: self.client.read_input_registers,
        }[block.table]
        await self._line_silence()
        self.rx_bytes = 0
        self._rx.clear()
        self._expect = (block.function_code, block.count)
        bad_frame: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._bad_frame = bad_frame
        request: asyncio.Future[ModbusPDU] = asyncio.ensure_future(
            call(block.start, count=block.count, device_id=unit_id)
        )
        waits: set[asyncio.Future[Any]] = {request, bad_frame}
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._expect = None
            if not request.done():
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError, ModbusException):
                    await request
        where = f"unit {unit_id}, {describe_block(block)}"
        if request not in done or request.cancelled() or request.exception() is not None:
            failure = None if request not in done or request.cancelled() else request.exception()
            if failure is not None and not isinstance(failure, ModbusException):
                raise failure
            if bad_frame.done():
                raise DeviceError(ErrorKind.FRAME, f"{where}: answer with a bad CRC ({self.rx_bytes} bytes)",
                                  bad_crc=True)
            if self.rx_bytes:  # bytes came back, but no valid frame: garbled
                raise DeviceError(ErrorKind.FRAME, f"{where}: garbled answer ({self.rx_bytes} bytes)")
            raise DeviceError(ErrorKind.TIMEOUT, f"{where}: no answer in {timeout_s} s")
        response: ModbusPDU = request.result()
        if response.isError():
            code = getattr(response, "exception_code", None)
            name = _EXCEPTION_NAMES.get(code or 0, "unknown")
            raise DeviceError(ErrorKind.EXCEPTION, f"{where}: exception {code} ({name})", code)
        if block.table.is_bit:
            bits = [int(b) for b in response.bits[: block.count]]
            if len(bits) < block.count:
                raise DeviceError(ErrorKind.FRAME, f"{where}: short answer")
            return bits
        registers = list(response.registers)
        if len(registers) != block.count:
            raise DeviceError(
                ErrorKind.FRAME, f"{where}: {len(registers)} registers, asked {block.count}"
            )
        return registers


def serial_port_problem(path: str, exc: BaseException | None) -> str:
    """Why a serial port cannot be opened, in words an installer can act on."""
    if not os.path.exists(path):
        return "no such device (is the adapter plugged in, is the path right?)"
    if not os.access(path, os.R_OK | os.W_OK):
        return "permission denied (add the gateway's user to the group that owns it, often 'dialout')"
    return str(exc) if exc else "the port did not open (busy, or not a serial device)"


Emit = Callable[[Sample], None]
StateChanged = Callable[[DeviceTarget], None]


class Poller:
    """Polls the devices behind one link, one transaction at a time.

    Args:
        link: the TCP connection or serial line.
        targets: the devices reached through it.
        emit: receives every sample (good or failed), in poll order.
        on_state_change: called when a device goes offline or comes back.
        backoff_max_s: cap of the poll interval of a device that does not answer.
        retry_timeouts: retry a request that timed out. True on TCP, where a device has the
            link to itself; False on a shared line, so a silent device costs its neighbours
            one timeout per poll, not ``1 + retries`` of them.
        now: the sampling clock (UTC); injectable.
    """

    def __init__(
        self,
        link: ModbusLink,
        targets: Sequence[DeviceTarget],
        emit: Emit,
        on_state_change: StateChanged,
        *,
        backoff_max_s: float,
        retry_timeouts: bool,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.link = link
        self.targets = list(targets)
        self.emit = emit
        self.on_state_change = on_state_change
        self.backoff_max_s = backoff_max_s
        self.retry_timeouts = retry_timeouts
        self.now = now

    async def run(self) -> None:
        """Poll forever (until cancelled); closes the link on the way out."""
        try:
            start = time.monotonic()
            for target in self.targets:
                target.next_due = start
            while True:
                target = min(self.targets, key=lambda t: t.next_due)
                delay = target.next_due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.poll_once(target)
        finally:
            self.link.close()

    async def poll_once(self, target: DeviceTarget) -> None:
        """Poll one device, emit its sample and schedule its next poll."""
        due = target.next_due
        ts = self.now()
        try:
            data = await self._read_all(target)
        except DeviceError as exc:
            flag = Flag.DEVICE_FAULT if exc.code == _DEVICE_FAILURE else Flag.COMM_FAILURE
            self.emit(Sample(target.site_id, target.device_id, target.kind, ts,
                             failed_metrics(target.kind, target.metrics, flag)))
            if target.health.record_error(ErrorKind(exc.kind), str(exc)):
                log.warning("device.offline", extra={"device": target.key, "error": str(exc),
                                                     "error_kind": exc.kind.value})
                self.on_state_change(target)
            # No jitter: a failing device's polls stay on a readable cadence.
            cap = max(self.backoff_max_s, target.poll_interval_s)
            backoff = Backoff(target.poll_interval_s, cap, jitter=0)
            target.next_due = time.monotonic() + backoff.delay(target.health.consecutive_failures)
            return
        sample = decode_sample(target.profile, target.metrics, data)
        for metric, value in sample.implausible.items():
            spec = target.profile.registers[metric]
            log.warning("device.implausible", extra={
                "device": target.key, "metric": metric, "value": repr(value), "min": spec.min,
                "max": spec.max, "resolution": spec.resolution, "profile": target.profile.model,
                "hint": "check the profile's type, word_order, scale and offset for this register",
            })
        if target.device_time and sample.device_ts is not None:
            ts = datetime.fromtimestamp(sample.device_ts, UTC)
        self.emit(Sample(target.site_id, target.device_id, target.kind, ts,
                         to_metric_values(target.kind, sample)))
        if target.health.record_ok():
            log.info("device.online", extra={"device": target.key})
            self.on_state_change(target)
        # Keep the cadence; if we fell behind (a slow line), start again from now.
        target.next_due = max(due + target.poll_interval_s, time.monotonic())

    async def _read(self, block: ReadBlock, target: DeviceTarget) -> list[int]:
        """One request; anything unexpected from the Modbus stack counts as a frame error."""
        try:
            return await self.link.read(block, target.unit_id, target.timeout_s)
        except DeviceError:
            raise
        except Exception as exc:  # a poison answer must not stop the line's other devices
            log.exception("device.unexpected_error", extra={"device": target.key})
            raise DeviceError(
                ErrorKind.FRAME, f"unit {target.unit_id}, {describe_block(block)}: unexpected {exc!r}"
            ) from exc

    async def _read_all(self, target: DeviceTarget) -> dict[Table, dict[int, int]]:
        data: dict[Table, dict[int, int]] = {}
        for block in target.blocks:
            attempt = 0
            while True:
                try:
                    values = await self._read(block, target)
                    break
                except DeviceError as exc:
                    attempt += 1
                    # A garbled answer is only known as such at the timeout too; a complete
                    # answer with a bad CRC is known at once and costs the line nothing more.
                    retryable = exc.kind is ErrorKind.CONNECT or exc.bad_crc or (
                        self.retry_timeouts and exc.kind is not ErrorKind.EXCEPTION
                    )
                    if not retryable or attempt > target.retries:
                        raise
            table = data.setdefault(block.table, {})
            for i, v in enumerate(values):
                table[block.start + i] = v
        return data
