"""``paced:///dev/pts/N``: a pyserial port for the paced-line tests that can be set to any parity.

A Linux pty refuses ``PARENB`` (tcsetattr answers EINVAL) and forces 8 data bits, so a
gateway cannot open a pty at 8E1 the way it opens a USB RS-485 adapter. This handler is the
pty's serial port with one difference: the character format the gateway asks for is recorded
in :data:`REQUESTED` (by path) for the relay to check, and the pty itself is set to 8N at the
requested speed and stop bits. pyserial finds it through ``serial.protocol_handler_packages``.
"""

from __future__ import annotations

from serial.serialposix import Serial as PosixSerial

REQUESTED: dict[str, tuple[int, int, str, float]] = {}  # path -> baudrate, bytesize, parity, stopbits


class PacedSerial(PosixSerial):
    """pyserial's POSIX port; the format asked for is recorded, the pty gets what it can take."""

    def _reconfigure_port(self, force_update: bool = False) -> None:
        REQUESTED[str(self.portstr)] = (self._baudrate, self._bytesize, self._parity, self._stopbits)
        parity, bytesize = self._parity, self._bytesize
        self._parity, self._bytesize = "N", 8
        try:
            super()._reconfigure_port(force_update)
        finally:
            self._parity, self._bytesize = parity, bytesize


def serial_class_for_url(url: str) -> tuple[str, type[PacedSerial]]:
    """pyserial's hook: ``paced:///dev/pts/3`` opens ``/dev/pts/3`` with :class:`PacedSerial`."""
    return url.removeprefix("paced://"), PacedSerial
