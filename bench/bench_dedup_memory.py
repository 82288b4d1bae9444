"""Memory of ingest's dedup state after days of readings, and the time to reload it.

Feeds ``SeqTracker`` what ``--gateways`` gateways send in ``--seqs`` seqs each (one in a
thousand lost on the way, a batch of 625 at a time as the storage sessions do), saving every
batch's seqs to a ``DedupStore`` like ingest, then reloads the store as a restart would. Prints
the RSS the tracker added and the reload's time and added RSS, as one JSON line.

Rerun: ``.venv/bin/python bench/bench_dedup_memory.py [--gateways 50] [--seqs 120000]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.dedup import DedupStore

_BATCH = 625


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _run(gateways: int, seqs: int, window: int, work: Path) -> dict[str, float]:
    store = DedupStore(work / "dedup.sqlite", window)
    tracker = await store.load()
    rnd = random.Random(1)
    gc.collect()
    before = _rss_mb()
    for g in range(gateways):
        gateway = f"gw-{g:04d}"
        batch: list[tuple[str, int]] = []
        for seq in range(seqs):
            if rnd.random() < 0.001:
                continue  # lost on the way: a hole
            if tracker.admit(gateway, seq):
                batch.append((gateway, seq))
            if len(batch) >= _BATCH:
                await store.save(batch, tracker)
                tracker.prune()
                batch = []
        if batch:
            await store.save(batch, tracker)
            tracker.prune()
    gc.collect()
    held = _rss_mb() - before
    holes = sum(len(s.holes) + len(s.early) for s in tracker.gateways.values())
    store.close()
    del tracker
    gc.collect()
    before = _rss_mb()
    began = time.monotonic()
    again = DedupStore(work / "dedup.sqlite", window)
    reloaded = await again.load()
    reload_s = time.monotonic() - began
    gc.collect()
    reload_mb = _rss_mb() - before
    again.close()
    assert len(reloaded.gateways) == gateways
    return {"gateways": gateways, "seqs_per_gateway": seqs, "window": window, "tracker_mb": round(held, 1),
            "holes_kept": holes, "reload_s": round(reload_s, 2), "reload_added_mb": round(reload_mb, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=50)
    parser.add_argument("--seqs", type=int, default=120_000,
                        help="seqs per gateway (120,000: four days of 20 devices)")
    parser.add_argument("--window", type=int, default=100_000, help="[ingest] dedup_window")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        print(json.dumps(asyncio.run(_run(args.gateways, args.seqs, args.window, Path(work)))))


if __name__ == "__main__":
    main()
