"""``weijian ingest quarantine``: one entry per line whatever the entry holds; ``--limit`` positive."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.quarantine import QuarantineStore
from ingest.validate import Quarantined

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
COLUMNS = 7  # id, received, reason, field, topic, detail, size and prefix


def _quarantine(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "ingest.toml"
    conf.write_text(f'[ingest]\nquarantine_path = "{tmp_path / "q.sqlite"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEIJIAN_")}
    return subprocess.run(
        [sys.executable, "-m", "weijian.cli", "ingest", "quarantine", "--config", str(conf), *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )


async def _fill(tmp_path: Path, entries: list[Quarantined]) -> None:
    store = QuarantineStore(tmp_path / "q.sqlite")
    await store.add(entries, NOW)
    store.close()


async def test_control_characters_in_an_entry_do_not_break_the_one_line_format(tmp_path: Path) -> None:
    nasty = "a\tb\rc\nd\x00e\x1bf\x7fg\u2028h\u0085i"
    bad_payload = b"{\t\r\n" + nasty.encode()
    await _fill(tmp_path, [
        Quarantined("", b"drinking_water,site_id=a temperature=\"x\"\n" * 3, "store_rejected", "batch",
                    'InfluxDB answered 400: {"error":"partial write: field type conflict"}\n'),
        Quarantined("weijian/v1/s\t1/d\n1/reading", bad_payload, "bad_topic", "topic", nasty),
        Quarantined("weijian/v1/s1/d1/reading", b"{}", "missing_field", "site_id", "site_id: Field required"),
    ])
    done = await asyncio.to_thread(_quarantine, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[-1] == ""  # the output ends with a newline, and holds no other line break
    header, *entries = lines[:-1]
    assert header.startswith("reason counts: ")
    assert len(entries) == 3, done.stdout
    for line in entries:
        assert len(line.split("\t")) == COLUMNS, repr(line)
        assert not any((ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) < 0xA0 for c in line), repr(line)
        assert "\r" not in line and "\u2028" not in line
    fields = {line.split("\t")[2]: line.split("\t") for line in entries}
    assert fields["store_rejected"][5].startswith("InfluxDB answered 400: ")
    assert "field type conflict" in fields["store_rejected"][5]
    assert "weijian/v1/s" in fields["bad_topic"][4] and "reading" in fields["bad_topic"][4]
    assert fields["bad_topic"][6].startswith(f"{len(bad_payload)} bytes: {{")
    assert fields["missing_field"][5] == "site_id: Field required"  # printable text is untouched


@pytest.mark.parametrize("limit", ["-1", "0", "abc", "1.5"])
async def test_limit_must_be_a_positive_integer(tmp_path: Path, limit: str) -> None:
    await _fill(tmp_path, [Quarantined("t", b"{}", "missing_field", "site_id", "x")])
    done = await asyncio.to_thread(_quarantine, tmp_path, "--limit", limit)
    assert done.returncode == 2, done.stdout
    assert "--limit" in done.stderr
    assert done.stdout == ""


async def test_limit_caps_the_entries(tmp_path: Path) -> None:
    await _fill(tmp_path, [Quarantined("t", b"{}", "missing_field", "site_id", str(i)) for i in range(5)])
    done = await asyncio.to_thread(_quarantine, tmp_path, "--limit", "2")
    assert done.returncode == 0, done.stderr
    entries = done.stdout.splitlines()[1:]
    assert [line.split("\t")[5] for line in entries] == ["4", "3"]  # newest first
