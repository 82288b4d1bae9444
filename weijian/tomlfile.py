"""Read the TOML files people edit (config, registry, profiles, scenarios, rule packs).

One place decides how a bad file is reported: the file's path first, then what is wrong,
raised as the caller's own :class:`~weijian.errors.UsageError` subclass (CLI exit 2).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from weijian.errors import UsageError, describe_validation

__all__ = ["read_toml", "validation_problem"]


def read_toml(path: Path, error: type[UsageError], what: str) -> dict[str, Any]:
    """Parse ``path`` as UTF-8 TOML.

    Args:
        path: the file.
        error: the exception class to raise.
        what: what the file is, for the message ("site registry").

    Raises:
        error: the file cannot be read, is not UTF-8, or is not TOML.
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc


def validation_problem(path: Path, exc: ValidationError, error: type[UsageError]) -> UsageError:
    """One ``error`` naming the file and every key pydantic refused."""
    return error("\n".join(f"{path}: key {key!r}: {msg}" for key, msg in describe_validation(exc)))
