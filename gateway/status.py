"""Device health and the gateway's retained status message.

:class:`DeviceHealth` is what the pollers record about each device (online or not, errors
by kind); :func:`build_status` is the pure function that turns it, the spool's numbers and
the publishing counters into the contract's ``GatewayStatus`` with its health keys.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from weijian.contract import GatewayState, GatewayStatus

__all__ = ["DeviceHealth", "ErrorKind", "build_status"]


class ErrorKind(StrEnum):
    """Why a poll failed."""

    TIMEOUT = "timeout"  # no answer within the device's timeout (silent device, dead link)
    EXCEPTION = "exception"  # the device answered with a Modbus exception code
    FRAME = "frame"  # a garbled or truncated answer, a bad CRC, an unexpected reply
    CONNECT = "connect"  # the TCP connection or the serial port could not be opened


@dataclass
class DeviceHealth:
    """What the gateway knows about one device's communication."""

    key: str
    online: bool = True
    polls: int = 0
    consecutive_failures: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None

    def record_ok(self) -> bool:
        """Note a good poll; returns whether the device came back online."""
        changed = not self.online
        self.polls += 1
        self.online = True
        self.consecutive_failures = 0
        return changed

    def record_error(self, kind: ErrorKind, detail: str) -> bool:
        """Note a failed poll; returns whether the device just went offline."""
        changed = self.online
        self.polls += 1
        self.online = False
        self.consecutive_failures += 1
        self.errors[kind.value] += 1
        self.last_error = detail
        return changed

    def as_json(self) -> dict[str, object]:
        """The device's entry in the status message."""
        return {
            "state": "online" if self.online else "offline",
            "polls": self.polls,
            "errors": dict(self.errors),
            "last_error": self.last_error,
        }


def build_status(
    gateway_id: str,
    now: datetime,
    *,
    uptime_s: float,
    queue_depth: int,
    oldest_queued_age_s: float | None,
    dropped: int,
    published: int,
    devices: Mapping[str, DeviceHealth],
) -> GatewayStatus:
    """The retained ``online`` status with its health keys.

    Args:
        gateway_id: this gateway.
        now: the status time.
        uptime_s: seconds since the gateway started.
        queue_depth: readings in the spool.
        oldest_queued_age_s: age of the oldest spooled reading (None: empty).
        dropped: readings dropped by the overflow policy, ever.
        published: readings acknowledged by the broker since start.
        devices: health by ``site_id/device_id``.

    Returns:
        The status, whose extra keys are the health report.
    """
    online = sorted(k for k, d in devices.items() if d.online)
    offline = sorted(k for k, d in devices.items() if not d.online)
    return GatewayStatus(
        gateway_id=gateway_id,
        state=GatewayState.ONLINE,
        ts=now,
        uptime_s=round(uptime_s, 1),
        queue_depth=queue_depth,
        oldest_queued_age_s=None if oldest_queued_age_s is None else round(oldest_queued_age_s, 1),
        dropped=dropped,
        published=published,
        devices_online=len(online),
        devices_offline=len(offline),
        offline_devices=offline,
        errors_by_device={k: sum(d.errors.values()) for k, d in devices.items() if d.errors},
        devices={k: d.as_json() for k, d in sorted(devices.items())},
    )
