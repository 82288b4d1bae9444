"""weijian's one exception tree; every stage raises these, library errors are translated at the edge.

WeijianError
 ├── UsageError             something a person must fix in a file or on the command line (exit 2)
 │    ├── ConfigError          a bad --config file or environment override
 │    ├── RegistryError        a bad site registry file
 │    ├── ProfileError         a bad or missing device profile
 │    ├── RulePackError        a bad rule pack
 │    ├── ScenarioError        a bad simulator scenario
 │    └── AlertsUnavailable    ``[ingest] alerts = true`` but the alerts stage cannot be loaded
 ├── ServiceError           a local service (Mosquitto, InfluxDB) could not be started
 ├── PartitionLost          another process holds an ingest partition now: stop acting for it
 ├── DeviceError            gateway: a poll failed (timeout, frame, exception, connect)
 ├── SpoolError             gateway: the spool file cannot be opened or written
 ├── MqttLost               ingest: the broker connection failed or closed; reconnect
 │    └── SessionTakenOver     another client connected with our client id (the partition moved)
 ├── InfluxError            ingest: InfluxDB did not take a batch
 │    ├── InfluxUnavailable    retryable: connection refused, timeout, 5xx, 429
 │    └── InfluxRejected       permanent: InfluxDB answered 4xx about the data (not retried)
 ├── TasksDbUnavailable     alerts: the tasks database could not be reached or refused a statement
 ├── DeliveryFailed         alerts: a notification was not accepted (``retryable`` says if worth again)
 └── PushFailed             dashboards: Grafana refused a request or could not be reached

The stage modules re-export the ones they raise (``from gateway.spool import SpoolError`` works),
but this module is where they are defined.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import ValidationError

__all__ = [
    "AlertsUnavailable",
    "ConfigError",
    "DeliveryFailed",
    "DeviceError",
    "InfluxError",
    "InfluxRejected",
    "InfluxUnavailable",
    "MqttLost",
    "PartitionLost",
    "ProfileError",
    "PushFailed",
    "RegistryError",
    "RulePackError",
    "ScenarioError",
    "ServiceError",
    "SessionTakenOver",
    "SpoolError",
    "TasksDbUnavailable",
    "UsageError",
    "WeijianError",
]


class WeijianError(Exception):
    """Base of every error weijian raises on purpose."""


class UsageError(WeijianError):
    """Something a person must fix in a file or on the command line; the CLI exits 2."""


def describe_validation(exc: ValidationError) -> list[tuple[str, str]]:
    """Turn a pydantic error into ``(dotted.key, message)`` pairs, one per problem.

    The value at fault is quoted only for keys that cannot hold a secret, and with any
    credentials inside a URL masked (see :func:`weijian.redact.mask`).
    """
    from weijian.redact import is_secret_key, mask

    out = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        msg = error["msg"]
        if msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        elif error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # a model's, a dataclass's
            msg = "unknown key (misspelt?)"
        elif error["type"] == "missing_argument":  # a dataclass's "missing"
            msg = "Field required"
        elif error["type"] != "missing" and not isinstance(error.get("input"), dict | list):
            if is_secret_key(key):
                msg = f"{msg} (value hidden)"
            else:
                shown = mask(repr(error["input"]))
                if f"got {shown}" not in msg:  # some messages quote the value already
                    msg = f"{msg} (got {shown[:80]})"
        out.append((key, mask(msg)))
    return out


class ConfigError(UsageError):
    """A configuration file or environment override is unreadable or invalid."""

    @classmethod
    def from_validation(cls, path: Path | None, exc: ValidationError) -> ConfigError:
        """Build one message naming the file and every key at fault."""
        where = str(path) if path else "configuration"
        lines = [f"{where}: key {key!r}: {msg}" for key, msg in describe_validation(exc)]
        return cls("\n".join(lines))


class RegistryError(UsageError):
    """The site registry file is unreadable, malformed or inconsistent."""


class ProfileError(UsageError):
    """A device profile is missing, unreadable or invalid; the message names file and key."""


class RulePackError(UsageError):
    """A rule-pack file is unreadable or invalid; the message names the file, rule and key."""


class ScenarioError(UsageError):
    """A scenario file is missing, unreadable or inconsistent; the message names file and key."""


class AlertsUnavailable(UsageError):
    """The alert engine is switched on but its package cannot be loaded."""


class ServiceError(WeijianError):
    """A local service process could not be started or did not answer in time."""


class PartitionLost(WeijianError):
    """A partition's lock, epoch or session is no longer this process's: stop acting for it.

    Raised by ingest's coordinator (the lock is not held) and by the alerts store (a fenced
    write was refused); shared so that both stages name the same condition.
    """


class DeviceError(WeijianError):
    """A poll failed; ``kind`` says how, ``code`` is the Modbus exception code if any.

    ``bad_crc``: a complete answer failed its CRC, a transmission error on a live device,
    so the request is worth repeating at once, even on a shared line.
    """

    def __init__(
        self, kind: StrEnum, detail: str, code: int | None = None, *, bad_crc: bool = False
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.code = code
        self.bad_crc = bad_crc


class SpoolError(WeijianError):
    """The spool file cannot be opened or written (disk full, permissions, corruption)."""


class MqttLost(WeijianError):
    """The broker connection failed or closed; the session loop reconnects."""


class SessionTakenOver(MqttLost):
    """Another client connected with our client id (MQTT v5 reason 0x8E): the partition moved."""


class InfluxError(WeijianError):
    """InfluxDB did not accept a batch."""


class InfluxUnavailable(InfluxError):
    """InfluxDB is unreachable, overloaded, or refuses us; the batch may succeed later.

    Refusals that an operator mends (401/403 credentials, 404 database not found) count too.
    """


class InfluxRejected(InfluxError):
    """InfluxDB refused the data itself; retrying the same batch cannot help."""


class TasksDbUnavailable(WeijianError):
    """The alerts database could not be reached or refused a statement."""


class DeliveryFailed(WeijianError):
    """A notification was not accepted; ``retryable`` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class PushFailed(WeijianError):
    """Grafana refused a request or could not be reached."""
