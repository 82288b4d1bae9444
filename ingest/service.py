"""The ingest shell: owns the MQTT session, the stores, the tasks and shutdown. No parsing, no rules.

Per batch: classify (``validate.py``), drop duplicates (``dedup.py``), format
(``lineproto.py``), make durable (``store.py``: InfluxDB or spool), quarantine the refused,
persist the seen seqs, hand off to alerts (``handoff.py``), and only then acknowledge.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from ingest.dedup import DedupStore, SeqTracker
from ingest.errors import AlertsUnavailable
from ingest.handoff import AlertHandoff
from ingest.influx_v1 import InfluxV1Writer
from ingest.lineproto import alert_line, reading_line
from ingest.metrics import IngestMetrics, serve_http
from ingest.quarantine import QuarantineStore
from ingest.receive import MqttIntake, MqttLost
from ingest.spool import Spool
from ingest.store import InfluxWriter, Storage
from ingest.validate import Incoming, Quarantined, classify_batch
from weijian.clock import Clock
from weijian.config import Settings
from weijian.contract import AlertEvent, GatewayStatus, Reading, alert_topic, reading_subscription
from weijian.registry import Registry

__all__ = ["AlertsRunner", "IngestService", "make_writer"]

log = logging.getLogger(__name__)

# Batches in progress at once: while one is being written to InfluxDB, the next is parsed.
_PIPELINE_DEPTH = 2

# ``await runner(inbox, events)``: the alert engine's entry point (alerts.service.AlertService.run).
AlertsRunner = Callable[[asyncio.Queue[Any], asyncio.Queue[AlertEvent]], Coroutine[Any, Any, None]]


def make_writer(settings: Settings) -> InfluxWriter:
    """The writer the ``[influx] api`` key chooses."""
    if settings.influx.api == "v2":
        from ingest.influx_v2 import InfluxV2Writer

        return InfluxV2Writer(settings.influx)
    return InfluxV1Writer(settings.influx)


def _load_alerts(settings: Settings, registry: Registry) -> AlertsRunner:
    try:
        module = importlib.import_module("alerts.service")
        service = module.AlertService.from_settings(settings, registry)
    except (ImportError, AttributeError) as exc:
        raise AlertsUnavailable(
            f"[ingest] alerts = true, but the alerts stage cannot be loaded ({exc}); "
            "set WEIJIAN_INGEST__ALERTS=false to run ingest without alert evaluation"
        ) from exc
    runner: AlertsRunner = service.run
    return runner


class IngestService:
    """One ingest process. ``await run(stop)`` until ``stop`` is set, then drain and return."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        alerts: AlertsRunner | None = None,
        clock: Callable[[], datetime] | None = None,
        writer: InfluxWriter | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        cfg = settings.ingest
        self.metrics = IngestMetrics()
        self._now = clock or Clock(settings.clock).now
        self._rng = rng or random.Random()
        self._root = settings.mqtt.topic_root
        self._district = {site_id: site.district for site_id, site in registry.sites.items()}
        self.quarantine = QuarantineStore(cfg.quarantine_path)
        self.spool = Spool(cfg.spool_path, cfg.spool_max_points)
        self._dedup = DedupStore(cfg.dedup_path, cfg.dedup_window)
        self.tracker = SeqTracker(cfg.dedup_window)
        self.storage = Storage(
            writer or make_writer(settings),
            self.spool,
            self.metrics,
            retries=cfg.write_retries,
            backoff_max_s=cfg.backoff_max_s,
            on_rejected=self._store_rejected,
            rng=self._rng,
        )
        if alerts is None and cfg.alerts:
            alerts = _load_alerts(settings, registry)
        self._alerts = alerts
        self.handoff = AlertHandoff(self.spool, cfg.alerts_inbox_size) if alerts else None
        if self.handoff is not None:
            handoff = self.handoff  # read when scraped, so the figures are current when idle
            self.metrics.consumer_lag.set_function(lambda: handoff.lag)
            self.metrics.alerts_overflowed.set_function(lambda: handoff.overflowed)
        self.events: asyncio.Queue[AlertEvent] = asyncio.Queue(maxsize=cfg.alerts_events_size)
        self._intake: MqttIntake | None = None
        self._session_intake: MqttIntake | None = None
        self._unacked = 0
        self.http_port: int | None = None

    # --- the batch pipeline --------------------------------------------------------------

    async def _process(
        self, intake: MqttIntake, batch: list[Incoming], after: asyncio.Task[None] | None = None
    ) -> None:
        """One batch, from bytes to acknowledged.

        Up to the first ``await`` (classify, deduplicate, format) batches run strictly in
        order. Storage may then overlap with the next batch's. The rest (:meth:`_finish`) waits
        for ``after``, the batch before, so the dedup store, alerts and the PUBACKs (MQTT-4.6.0-2)
        see the batches in the order the messages came.
        """
        if not batch:
            if after is not None:
                await after
            return
        m = self.metrics
        tracker = self.tracker
        self._unacked += len(batch)
        m.unacked.set(self._unacked)
        now = self._now()
        readings, statuses, refused = classify_batch(batch, root=self._root, now=now, registry=self.registry)
        m.readings_in.inc(len(batch) - len(statuses))
        admit = tracker.admit
        new: list[Reading] = []
        seen: list[tuple[str, int]] = []
        for reading in readings:
            if admit(reading.gateway_id, reading.seq):
                new.append(reading)
                seen.append((reading.gateway_id, reading.seq))
        if len(new) != len(readings):
            m.duplicates.inc(len(readings) - len(new))
        if new:
            district = self._district
            body = "\n".join([reading_line(r, district[r.site_id]) for r in new]).encode()
            await self.storage.store(body, len(new))
            m.accepted.inc(len(new))
        if refused:
            await self.quarantine.add(refused, now)
            for q in refused:
                m.rejected.labels(q.reason).inc()
        if after is not None:
            await after
        # Shielded: a lost connection cuts a batch before this point (nothing of it is marked
        # seen; the broker redelivers it) or not at all, so a batch the dedup store knows as
        # seen has always reached alerts too.
        await asyncio.shield(self._finish(intake, batch, tracker, seen, [*new, *statuses]))

    async def _finish(
        self,
        intake: MqttIntake,
        batch: list[Incoming],
        tracker: SeqTracker,
        seen: list[tuple[str, int]],
        items: list[Reading | GatewayStatus],
    ) -> None:
        """Persist the batch's seqs, hand it to alerts, acknowledge it."""
        m = self.metrics
        if seen:
            await self._dedup.save(seen, tracker)
            tracker.prune()
            for gateway in {g for g, _ in seen}:
                m.seq_missing.labels(gateway).set(tracker.gateways[gateway].missing)
        if self.handoff is not None and items:
            await self.handoff.offer(items)
        intake.ack(batch)  # a no-op if this batch's session is gone: the broker redelivers it
        if intake is self._session_intake:
            self._unacked -= len(batch)
            m.unacked.set(self._unacked)

    async def _store_rejected(self, body: bytes, detail: str) -> None:
        entry = Quarantined("", body, "store_rejected", "batch", detail)
        await self.quarantine.add([entry], self._now())
        self.metrics.rejected.labels("store_rejected").inc()

    # --- MQTT session with reconnection -----------------------------------------------------

    async def _session(self, stop: asyncio.Event) -> None:
        cfg = self.settings.ingest
        intake = MqttIntake(self.settings.mqtt, cfg, client_id=cfg.client_id)
        # What the last session admitted but never stored is redelivered: forget it, and
        # remember only the seqs made durable (a batch cut short by a lost connection may
        # have been admitted in memory; its redelivered copies must not count as duplicates).
        self.tracker = await self._dedup.load()
        self._unacked = 0
        self._session_intake = intake
        try:
            await intake.connect(
                [f"$share/{cfg.shared_group}/{reading_subscription(self._root)}"],
                f"{self._root}/gateways/+/status",
            )
            async with asyncio.TaskGroup() as tg:
                keepalive = tg.create_task(intake.keepalive(), name="mqtt-keepalive")
                in_flight: deque[asyncio.Task[None]] = deque()
                last: asyncio.Task[None] | None = None
                while not stop.is_set():
                    batch = await intake.next_batch(cfg.batch_interval_s)
                    if self._intake is None and intake.is_subscribed:  # ready: /healthz says ok
                        self._intake = intake
                        self.metrics.mqtt_connected.set(1)
                        self.metrics.mqtt_sessions.inc()
                    if not batch:
                        continue
                    last = tg.create_task(self._process(intake, batch, last), name="ingest-batch")
                    in_flight.append(last)
                    while in_flight and (len(in_flight) >= _PIPELINE_DEPTH or in_flight[0].done()):
                        # Wait for the oldest batch, but notice a lost connection meanwhile.
                        await asyncio.wait([in_flight[0], intake.lost], return_when=asyncio.FIRST_COMPLETED)
                        if intake.lost.done():
                            intake.lost.result()  # raises MqttLost: the batches in flight are cut
                        await in_flight.popleft()
                intake.stop_reading()  # 1. take no new work
                await self._process(intake, intake.take_pending(), last)  # 2. finish what we took, ack
                await intake.disconnect()  # 3. the session stays on the broker
                keepalive.cancel()
        finally:
            intake.close()
            self._intake = None
            self.metrics.mqtt_connected.set(0)

    async def _sessions(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                await self._session(stop)
                attempt = 0
            except* MqttLost as group:
                delay = self._rng.uniform(0, min(30.0, 0.5 * 2**attempt))
                attempt += 1
                log.warning(
                    "mqtt.lost", extra={"error": str(group.exceptions[0]), "retry_in_s": round(delay, 2)}
                )
                try:
                    async with asyncio.timeout(delay):
                        await stop.wait()
                except TimeoutError:
                    pass

    # --- alert events out ---------------------------------------------------------------------

    async def _publish_events(self) -> None:
        while True:
            event = await self.events.get()
            await self.storage.store(alert_line(event).encode(), 1)
            payload = event.model_dump_json().encode()
            while True:
                intake = self._intake
                if intake is not None:
                    try:
                        await intake.publish(alert_topic(self._root, event.site_id), payload)
                        break
                    except MqttLost as exc:
                        log.warning("alert.publish_failed", extra={"error": str(exc)})
                await asyncio.sleep(0.5)

    # --- the whole service -------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` says: ok while connected to the broker."""
        return {
            "ok": self._intake is not None,
            "mqtt_connected": self._intake is not None,
            "influx_healthy": self.storage.is_healthy,
            "spool_points": self.spool.points,
            "alerts_lag": self.handoff.lag if self.handoff else 0,
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then stop intake, flush, acknowledge and close."""
        cfg = self.settings.ingest
        await self.spool.open()
        self.metrics.spool_depth.set(self.spool.points)
        server = None
        if cfg.metrics_port is not None:
            server = await serve_http(cfg.metrics_host, cfg.metrics_port, self.metrics, self.health)
            self.http_port = server.sockets[0].getsockname()[1]
        log.info(
            "ingest.started", extra={"spool_points": self.spool.points, "alerts": self._alerts is not None}
        )
        try:
            async with asyncio.TaskGroup() as tg:
                background = [tg.create_task(self.storage.drain(), name="spool-drain")]
                if self._alerts is not None and self.handoff is not None:
                    background += [
                        tg.create_task(self.handoff.pump(), name="alerts-backlog-pump"),
                        tg.create_task(self._alerts(self.handoff.inbox, self.events), name="alerts-engine"),
                        tg.create_task(self._publish_events(), name="alert-events-out"),
                    ]
                await tg.create_task(self._sessions(stop), name="mqtt-session")
                try:
                    async with asyncio.timeout(cfg.drain_timeout_s):
                        await self.storage.flush()
                except TimeoutError:
                    log.warning("shutdown.spool_left", extra={"points": self.spool.points})
                for task in background:
                    task.cancel()
            if self.handoff is not None:
                await self.handoff.save_queue()
        finally:
            if server is not None:
                server.close()
            await self.storage.close_writer()
            for store in (self.quarantine, self.spool, self._dedup):
                await asyncio.to_thread(store.close)
            log.info("ingest.stopped")
