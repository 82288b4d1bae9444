"""dashboards owns the duty desk's view: Grafana dashboards and provisioning built from the rule packs.

Public API (imported lazily, so ``weijian --help`` does not load the Grafana SDK and client):
    build_all, BoardOptions, to_json: the dashboards as grafana-foundation-sdk objects / JSON.
    write_provisioning, datasources, provider: the files a stock Grafana loads from disk.
    push, PushFailed, PushReport: upsert into a running Grafana through its HTTP API.
    substitute, TimeRange: interpolate Grafana template variables (used to test every query).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BoardOptions",
    "PushFailed",
    "PushReport",
    "TimeRange",
    "build_all",
    "datasources",
    "provider",
    "push",
    "substitute",
    "to_json",
    "write_provisioning",
]

_HOME = {
    "BoardOptions": "boards", "build_all": "boards", "to_json": "boards",
    "datasources": "provisioning", "provider": "provisioning", "write_provisioning": "provisioning",
    "PushFailed": "push", "PushReport": "push", "push": "push",
    "TimeRange": "templating", "substitute": "templating",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _HOME:
        raise AttributeError(f"module 'dashboards' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dashboards.{_HOME[name]}"), name)
