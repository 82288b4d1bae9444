"""Inside ingest, the outbox worker runs on an event loop of its own (``AlertStage.run``): a
notification goes out while ingest's loop is busy with readings, and cancelling the stage ends
the worker's thread."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from alerts.service import AlertStage
from alerts.store import OutboxItem
from tests.alerts.conftest import Receiver, make_settings
from weijian.registry import Registry


async def test_a_notification_goes_out_while_the_ingest_loop_is_busy(
    tmp_path: Path, registry: Registry, receiver: Receiver
) -> None:
    # A long poll interval: only the poke can make the worker look at the outbox in time.
    settings = make_settings(f"sqlite:///{tmp_path}/tasks.sqlite", receiver.url, outbox_poll_s=60)
    stage = AlertStage.from_settings(settings, registry, lambda: datetime.now(UTC))
    store = await stage.open()
    runner = asyncio.create_task(stage.run())
    try:
        await asyncio.sleep(0.5)  # the worker is waiting on its own loop now
        item = OutboxItem(idem_key="t1:firing", channel="sms", recipient="13800000000",
                          payload={"idempotency_key": "t1:firing", "text": "冷链温度超限"}, alert_id="t1")
        await asyncio.to_thread(store.record, [], [], [item], [], datetime.now(UTC))
        assert stage.worker is not None
        stage.worker.poke()
        # Ingest's loop is busy for 3 s (parsing a backlog, say): it runs nothing else meanwhile.
        began = time.monotonic()
        while time.monotonic() - began < 3 and not receiver.keys():
            time.sleep(0.01)  # noqa: ASYNC251 - blocking on purpose: the loop is busy
        assert receiver.keys() == ["t1:firing"], "the SMS waited for ingest's loop"
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        stage.close()
    assert not any(t.name == "alerts-outbox" for t in threading.enumerate())
    # A partition that commits after the stage stopped still wakes the worker without an error
    # (its loop is closed; the row waits in the outbox for the next worker).
    stage.worker.poke()
