"""weijian's exception tree. Library errors are translated into these at the boundary.

WeijianError
 ├── UsageError        bad configuration or input a person must fix (CLI exit 2)
 │    ├── ConfigError      a bad --config file or environment override
 │    └── RegistryError    a bad site registry file
 ├── ServiceError      a local service (Mosquitto, InfluxDB) could not be started
 └── PartitionLost     another process holds an ingest partition now: stop acting for it
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

__all__ = ["ConfigError", "PartitionLost", "RegistryError", "ServiceError", "UsageError", "WeijianError"]


class WeijianError(Exception):
    """Base of every error weijian raises on purpose."""


class PartitionLost(WeijianError):
    """A partition's lock, epoch or session is no longer this process's: stop acting for it.

    Raised by ingest's coordinator (the lock is not held) and by the alerts store (a fenced
    write was refused); shared so that both stages name the same condition.
    """


class UsageError(WeijianError):
    """Something a person must fix in a file or on the command line; the CLI exits 2."""


def describe_validation(exc: ValidationError) -> list[tuple[str, str]]:
    """Turn a pydantic error into ``(dotted.key, message)`` pairs, one per problem."""
    out = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        msg = error["msg"]
        if msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        elif error["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        elif error["type"] != "missing" and not isinstance(error.get("input"), dict | list):
            shown = repr(error["input"])
            msg = f"{msg} (got {shown[:80]})"
        out.append((key, msg))
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


class ServiceError(WeijianError):
    """A local service process could not be started or did not answer in time."""
