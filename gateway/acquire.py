"""Acquisition: Modbus links (TCP, RTU over a serial port) and the poll loops that use them.

One poller task per RS-485 line, holding the line for one transaction at a time with the
inter-frame gap after each answer, serving several unit ids; one poller task per TCP
device. Each device has its own poll interval, timeout and retries. A failed poll yields a
sample whose values are null with flag ``B`` (or ``D`` for exception 4, the instrument
reporting its own failure), and the device is polled with exponential backoff until it
answers again. pymodbus exceptions stop in this module: they become :class:`DeviceError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymodbus import ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from gateway.decode import decode_sample, failed_metrics, to_metric_values
from gateway.spool import Sample
from gateway.status import DeviceHealth, ErrorKind
from weijian.contract import Flag, Kind
from weijian.device_profile import DeviceProfile, ReadBlock, Table
from weijian.errors import WeijianError

__all__ = [
    "DeviceError",
    "DeviceTarget",
    "ModbusLink",
    "Poller",
]

log = logging.getLogger(__name__)

_Tracer = Callable[[bool, bytes], bytes]

# Modbus exception 4, SERVER DEVICE FAILURE: the instrument says it is broken (flag D).
_DEVICE_FAILURE = 4


class DeviceError(WeijianError):
    """A poll failed; ``kind`` says how, ``code`` is the Modbus exception code if any."""

    def __init__(self, kind: ErrorKind, detail: str, code: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.code = code


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


class ModbusLink:
    """One pymodbus client: a TCP connection or a serial port; translates its errors.

    Args:
        make_client: builds the pymodbus async client (``retries=0``) given the packet tracer.
        name: for logs (``tcp://host:port`` or the serial path).
    """

    def __init__(
        self,
        make_client: Callable[[_Tracer], AsyncModbusTcpClient | AsyncModbusSerialClient],
        name: str,
    ) -> None:
        self.client = make_client(self._trace)
        self.name = name
        self.rx_bytes = 0  # bytes received during the current request

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
    def rtu(cls, path: str, baudrate: int, timeout_s: float) -> ModbusLink:
        """A Modbus RTU link on a serial port (pyserial)."""
        return cls(
            lambda trace: AsyncModbusSerialClient(
                path, baudrate=baudrate, timeout=timeout_s, retries=0, trace_packet=trace
            ),
            path,
        )

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self.rx_bytes += len(data)
        return data

    def close(self) -> None:
        """Close the connection or port."""
        self.client.close()

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
            except (TimeoutError, OSError, ModbusException) as exc:
                raise DeviceError(ErrorKind.CONNECT, f"{self.name}: cannot connect: {exc}") from exc
            if not is_connected:
                raise DeviceError(ErrorKind.CONNECT, f"{self.name}: cannot connect")
        self.rx_bytes = 0
        call = {
            Table.COIL: self.client.read_coils,
            Table.DISCRETE_INPUT: self.client.read_discrete_inputs,
            Table.HOLDING: self.client.read_holding_registers,
            Table.INPUT: self.client.read_input_registers,
        }[block.table]
        try:
            async with asyncio.timeout(timeout_s):
                response: ModbusPDU = await call(block.start, count=block.count, device_id=unit_id)
        except (TimeoutError, ModbusException) as exc:
            if self.rx_bytes:  # bytes came back, but no valid frame: garbled or bad CRC
                raise DeviceError(
                    ErrorKind.FRAME, f"unit {unit_id}: garbled answer ({self.rx_bytes} bytes)"
                ) from exc
            raise DeviceError(ErrorKind.TIMEOUT, f"unit {unit_id}: no answer in {timeout_s} s") from exc
        if response.isError():
            code = getattr(response, "exception_code", None)
            raise DeviceError(ErrorKind.EXCEPTION, f"unit {unit_id}: exception {code}", code)
        if block.table.is_bit:
            bits = [int(b) for b in response.bits[: block.count]]
            if len(bits) < block.count:
                raise DeviceError(ErrorKind.FRAME, f"unit {unit_id}: short answer")
            return bits
        registers = list(response.registers)
        if len(registers) != block.count:
            raise DeviceError(
                ErrorKind.FRAME, f"unit {unit_id}: {len(registers)} registers, asked {block.count}"
            )
        return registers


Emit = Callable[[Sample], None]
StateChanged = Callable[[DeviceTarget], None]


class Poller:
    """Polls the devices behind one link, one transaction at a time.

    Args:
        link: the TCP connection or serial line.
        targets: the devices reached through it.
        emit: receives every sample (good or failed), in poll order.
        on_state_change: called when a device goes offline or comes back.
        frame_gap_s: silence after each transaction (RS-485 inter-frame gap; 0 on TCP).
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
        frame_gap_s: float,
        backoff_max_s: float,
        retry_timeouts: bool,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.link = link
        self.targets = list(targets)
        self.emit = emit
        self.on_state_change = on_state_change
        self.frame_gap_s = frame_gap_s
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
                if self.frame_gap_s:
                    await asyncio.sleep(self.frame_gap_s)
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
            if target.health.record_error(exc.kind, str(exc)):
                log.warning("device.offline", extra={"device": target.key, "error": str(exc),
                                                     "error_kind": exc.kind.value})
                self.on_state_change(target)
            backoff = min(
                target.poll_interval_s * 2 ** min(target.health.consecutive_failures - 1, 16),
                max(self.backoff_max_s, target.poll_interval_s),
            )
            target.next_due = time.monotonic() + backoff
            return
        sample = decode_sample(target.profile, target.metrics, data)
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
            raise DeviceError(ErrorKind.FRAME, f"unit {target.unit_id}: unexpected {exc!r}") from exc

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
                    # A garbled answer is only known as such at the timeout too.
                    retryable = exc.kind is ErrorKind.CONNECT or (
                        self.retry_timeouts and exc.kind is not ErrorKind.EXCEPTION
                    )
                    if not retryable or attempt > target.retries:
                        raise
                    if self.frame_gap_s:
                        await asyncio.sleep(self.frame_gap_s)
            table = data.setdefault(block.table, {})
            for i, v in enumerate(values):
                table[block.start + i] = v
        return data
