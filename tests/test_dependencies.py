"""What `pip install .` brings: the runtime closure of weijian's requirements, read from the
installed distributions' metadata. urllib3-future (which replaces the `urllib3` package) and
rich come only with the `grafana` and `demo` extras."""

from __future__ import annotations

import importlib.metadata as md

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(name: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """Every distribution `pip install name[extras]` pulls in (as installed here)."""
    seen: set[str] = set()
    todo = [(canonicalize_name(name), extras)]
    while todo:
        dist, wanted = todo.pop()
        key = f"{dist}[{','.join(sorted(wanted))}]"
        if key in seen:
            continue
        seen.add(key)
        for line in md.requires(dist) or []:
            req = Requirement(line)
            envs = [default_environment() | {"extra": e} for e in (wanted or {""})]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return {k.split("[")[0] for k in seen}


def test_the_runtime_install_has_neither_urllib3_future_nor_rich() -> None:
    runtime = closure("weijian")
    assert "paho-mqtt" in runtime and "influxdb-client" in runtime  # the walk works
    assert "urllib3" in runtime  # influxdb-client's, the real one
    for extra_only in ("urllib3-future", "niquests", "grafana-client", "rich"):
        assert extra_only not in runtime, extra_only


def test_the_extras_bring_what_they_are_for() -> None:
    assert {"grafana-client", "urllib3-future"} <= closure("weijian", frozenset({"grafana"}))
    assert "rich" in closure("weijian", frozenset({"demo"}))


def test_paho_is_pinned_to_the_tested_minor_release() -> None:
    (paho,) = [Requirement(r) for r in md.requires("weijian") or [] if r.startswith("paho-mqtt")]
    assert paho.specifier.contains("2.2.0") and not paho.specifier.contains("2.3.0")
    assert md.version("paho-mqtt").startswith("2.2.")
