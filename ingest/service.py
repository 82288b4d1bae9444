"""The ingest shell: owns the partitions, their MQTT sessions, the stores, the tasks and shutdown.

The registry is cut into fixed partitions (``partitions.py``); a coordinator (``coordinate.py``)
gives each partition to one process at a time. For each partition it holds, a process runs
two persistent MQTT sessions with plain subscriptions, which Mosquitto restores after a restart:

- **storage** (``{client_id}-p{n}``), per batch: classify (``validate.py``), drop duplicates
  (``dedup.py``), format (``lineproto.py``), make durable (``store.py``: InfluxDB or spool),
  quarantine the refused, persist the seen seqs, and only then acknowledge;
- **alerts** (``{client_id}-p{n}-alerts``): classify, judge in order with the partition's own
  engine (state rebuilt from the database when the partition is taken over), record, and
  acknowledge only once the engine state is saved. While the alerts database is down, these
  messages wait in the broker's session for the partition: storage goes on.

A third, clean connection of the process publishes alert events (at QoS 1), and the holder of the
first partition also catches readings of sites absent from the registry, to quarantine them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.coordinate import Coordinator, LocalCoordinator, PgCoordinator
from ingest.dedup import DedupStore, SeqTracker
from ingest.influx_v1 import InfluxV1Writer
from ingest.lineproto import alert_line, reading_line
from ingest.metrics import IngestMetrics
from ingest.partitions import Partition, partition_registry
from ingest.quarantine import QuarantineStore
from ingest.receive import MqttIntake, MqttLost, SessionTakenOver, Subscription, ack_tokens
from ingest.spool import PointSpool
from ingest.store import InfluxWriter, Storage
from ingest.validate import Incoming, Quarantined, VerdictCache, classify, classify_batch
from weijian.backoff import Backoff
from weijian.clock import Clock
from weijian.config import Settings
from weijian.contract import AlertEvent, GatewayStatus, Reading, alert_topic
from weijian.errors import AlertsUnavailable, ConfigError, PartitionLost, ServiceError, UsageError
from weijian.registry import Registry
from weijian.status_http import StatusServer

__all__ = ["AlertJudge", "AlertsStage", "IngestService", "early_coordinator", "make_writer"]

log = logging.getLogger(__name__)

# Batches in progress at once: while one is being written to InfluxDB, the next is parsed.
_PIPELINE_DEPTH = 2
_BACKOFF_CAP_S = 30.0
_GOOD_SESSION_S = 10.0  # a session that lasted this long resets the reconnection backoff
_STAGES = ("influx", "alerts", "outbox", "coordinator")
# A partition's session still starting (the alerts one loads its engine state first) counts as
# live for its partner this long, so that the other does not drain a backlog alone and leave
# every message to be parsed again; bounded, so a stage that cannot start holds nobody back.
_PARTNER_START_GRACE_S = 5.0
_SAVE_SHARE = 20  # an alerts session spends at most 1/20 of its time saving its engine state
_SAVE_SPACING_MAX_S = 5.0


class AlertJudge(Protocol):
    """One partition's alert engine (``alerts.service.AlertService``), as ingest uses it."""

    degraded: bool
    last_save_s: float  # how long the last save of its state took

    async def handle_batch(self, batch: list[Any], events: asyncio.Queue[AlertEvent] | None) -> Any:
        """Judge items in order; record any transitions (retrying while the database is down)."""

    async def checkpoint(self) -> None:
        """Save the engine state; raises ``PartitionLost`` if the partition moved."""

    async def tick(self, events: asyncio.Queue[AlertEvent] | None) -> None:
        """Clock work."""


class AlertsStage(Protocol):
    """The alerts stage (``alerts.service.AlertStage``), loaded only when ``[ingest] alerts``."""

    error: str

    async def partition(
        self, key: str, scope: Collection[tuple[str, str]], fence: Callable[[], tuple[int, int, int] | None]
    ) -> AlertJudge:
        """An engine for one partition."""

    async def run(self) -> None:
        """The outbox worker."""

    def close(self) -> None:
        """Release the database."""


def make_writer(settings: Settings) -> InfluxWriter:
    """The writer the ``[influx] api`` key chooses."""
    if settings.influx.api == "v2":
        from ingest.influx_v2 import InfluxV2Writer

        return InfluxV2Writer(settings.influx)
    return InfluxV1Writer(settings.influx)


def _load_alerts(settings: Settings, registry: Registry, clock: Callable[[], datetime]) -> AlertsStage:
    # Imported here, not at the top: with [ingest] alerts = false, ingest does not load the
    # alerts stage (SQLAlchemy, Alembic, the rule packs) at all.
    try:
        from alerts.service import AlertStage
    except ImportError as exc:
        raise AlertsUnavailable(
            f"[ingest] alerts = true, but the alerts stage cannot be loaded ({exc}); "
            "set WEIJIAN_INGEST__ALERTS=false to run ingest without alert evaluation"
        ) from exc
    stage: AlertsStage = AlertStage.from_settings(settings, registry, clock)
    return stage


def early_coordinator(settings: Settings) -> PgCoordinator | None:
    """The PostgreSQL coordinator the settings ask for, without partitions yet (see ``assign``).

    None for the local (file lock) coordination. Needs no registry, so ``ingest run`` makes it
    first and joins while the registry loads.

    Raises:
        ConfigError: ``coordination = "postgres"`` without a PostgreSQL ``[tasks] url``.
    """
    cfg = settings.ingest
    url = settings.tasks.url
    mode = cfg.coordination
    postgres = url.startswith(("postgresql:", "postgresql+psycopg:"))
    if mode == "auto":
        mode = "postgres" if postgres else "local"
    if mode == "postgres" and not postgres:
        raise ConfigError(
            f'[ingest] coordination = "postgres" needs [tasks] url = "postgresql://...", '
            f"not {url.split('@')[-1]!r}"  # no credentials in the message
        )
    if mode != "postgres":
        return None
    return PgCoordinator(url, cfg.client_id, [], interval_s=cfg.claim_interval_s,
                         member_timeout_s=cfg.member_timeout_s,
                         connect_timeout_s=settings.alerts.db_timeout_s)


def _partition_lost(exc: BaseException) -> bool:
    return isinstance(exc, PartitionLost)


async def _sleep_unless(stop: asyncio.Event, delay: float) -> None:
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        pass


class IngestService:
    """One ingest process. ``await run(stop)`` until ``stop`` is set, then drain and return."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        alerts: AlertsStage | None = None,
        clock: Callable[[], datetime] | None = None,
        writer: InfluxWriter | None = None,
        rng: random.Random | None = None,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        cfg = settings.ingest
        self.metrics = IngestMetrics()
        self._now = clock or Clock(settings.clock).now
        self._rng = rng or random.Random()
        self._root = settings.mqtt.topic_root
        self._district = {site_id: site.district for site_id, site in registry.sites.items()}
        self.partitions = {p.index: p for p in partition_registry(registry, cfg.partitions) if p.sites}
        self._first_partition = min(self.partitions, default=-1)
        self.quarantine = QuarantineStore(cfg.quarantine_path)
        self.spool = PointSpool(cfg.spool_path, cfg.spool_max_points)
        self._dedup = DedupStore(cfg.dedup_path, cfg.dedup_window)
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
            alerts = _load_alerts(settings, registry, self._now)
        self._alerts = alerts
        self.coordinator = coordinator or self._make_coordinator()
        if isinstance(self.coordinator, PgCoordinator):  # made early by `ingest run`: see early_coordinator
            self.coordinator.assign(sorted(self.partitions))
        self.events: asyncio.Queue[AlertEvent] = asyncio.Queue(maxsize=cfg.alerts_events_size)
        self._control: MqttIntake | None = None
        self._runners: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._judges: dict[int, AlertJudge] = {}
        self._verdicts: dict[int, VerdictCache] = {}
        self._unacked = 0
        self._alerts_unacked = 0
        self._subscribed: set[str] = set()
        self._live: set[str] = set()  # sessions connected and reading (p3, a3)
        self._starting: dict[str, float] = {}  # sessions not yet live -> until when they count as live
        self.intakes: dict[str, MqttIntake] = {}  # the live sessions by name (p3, a3), for tests
        self.http_port: int | None = None
        self.metrics.consumer_lag.set_function(lambda: self._alerts_unacked)
        self.metrics.partitions_held.set_function(lambda: len(self._runners))
        for stage in _STAGES:
            self.metrics.degraded.labels(stage).set_function(self._is_degraded(stage))

    def _make_coordinator(self) -> Coordinator:
        indices = sorted(self.partitions)
        coordinator = early_coordinator(self.settings)
        if coordinator is not None:
            return coordinator
        return LocalCoordinator(self._lock_path(), indices)

    def _lock_path(self) -> Path:
        """Where a standby waits: beside the SQLite tasks database, else in the temp directory."""
        cfg = self.settings.ingest
        if cfg.lock_path is not None:
            return cfg.lock_path
        url = self.settings.tasks.url
        if cfg.alerts and url.startswith("sqlite:///"):
            return Path(url.removeprefix("sqlite:///") + f".{cfg.client_id}.lock")
        return Path(tempfile.gettempdir()) / f"weijian-{cfg.client_id}.lock"

    # --- the storage pipeline ------------------------------------------------------------

    async def _process(
        self,
        intake: MqttIntake,
        tracker: SeqTracker,
        batch: list[Incoming],
        after: asyncio.Task[None] | None = None,
        cache: VerdictCache | None = None,
    ) -> None:
        """One batch, from bytes to acknowledged.

        Up to the first ``await`` (classify, deduplicate, format) batches run strictly in
        order. Storage may then overlap with the next batch's. The rest (:meth:`_finish`) waits
        for ``after``, the batch before, so the dedup store and the PUBACKs (MQTT-4.6.0-2)
        see the batches in the order the messages came. A batch whose storage fails with an
        unexpected error is quarantined and acknowledged, never retried forever.
        """
        if not batch:
            if after is not None:
                await after
            return
        m = self.metrics
        self._unacked += len(batch)
        m.unacked.set(self._unacked)
        now = self._now()
        before = (cache.hits, cache.misses) if cache is not None else (0, 0)
        readings, statuses, refused = classify_batch(batch, root=self._root, now=now, registry=self.registry,
                                                     cache=cache)
        self._count_parses(cache, before, len(batch))
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
            try:
                district = self._district
                body = "\n".join([reading_line(r, district[r.site_id]) for r in new]).encode()
                await self.storage.store(body, len(new))
                m.accepted.inc(len(new))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a poison batch must not become a crash loop
                log.exception("batch.store_failed", extra={"readings": len(new)})
                detail = f"{type(exc).__name__}: {exc}"[:500]
                refused += [Quarantined("", r.model_dump_json().encode(), "store_failed", "batch", detail)
                            for r in new]
        if refused:
            await self.quarantine.add(refused, now)
            for q in refused:
                m.rejected.labels(q.reason).inc()
        if after is not None:
            await after
        # Shielded: a lost connection cuts a batch before this point (nothing of it is marked
        # seen; the broker redelivers it) or not at all.
        await asyncio.shield(self._finish(intake, tracker, batch, seen))

    async def _finish(
        self, intake: MqttIntake, tracker: SeqTracker, batch: list[Incoming], seen: list[tuple[str, int]]
    ) -> None:
        """Persist the batch's seqs, acknowledge it."""
        m = self.metrics
        if seen:
            await self._dedup.save(seen, tracker)
            tracker.prune()
            for gateway in {g for g, _ in seen}:
                if gateway in self.registry.gateways:  # the client does not choose our series
                    m.seq_missing.labels(gateway).set(tracker.gateways[gateway].missing)
        intake.ack(batch)  # a no-op if this batch's session is gone: the broker redelivers it
        self._unacked -= len(batch)
        m.unacked.set(self._unacked)

    async def _store_rejected(self, body: bytes, detail: str) -> None:
        entry = Quarantined("", body, "store_rejected", "batch", detail)
        await self.quarantine.add([entry], self._now())
        self.metrics.rejected.labels("store_rejected").inc()

    async def _storage_session(self, part: Partition, stop: asyncio.Event) -> None:
        cfg = self.settings.ingest
        intake = MqttIntake(self.settings.mqtt, cfg, client_id=f"{cfg.client_id}-p{part.index}",
                            max_pending=self._read_ahead())
        self.intakes[f"p{part.index}"] = intake
        # What the last session admitted but never stored is redelivered: forget it, and
        # remember only the seqs made durable.
        gateways = self.registry.gateways
        tracker = await self._dedup.load(lambda g: g in part.gateways or g not in gateways)
        try:
            # Statuses too, so a malformed one is quarantined here even with alerts off.
            await intake.connect(self._subscriptions(part))
            self._live.add(f"p{part.index}")  # reading (the SUBACK comes after a resumed queue)
            async with asyncio.TaskGroup() as tg:
                keepalive = tg.create_task(intake.keepalive(), name=f"mqtt-keepalive-p{part.index}")
                in_flight: deque[asyncio.Task[None]] = deque()
                last: asyncio.Task[None] | None = None
                cache = self._verdicts.get(part.index)
                counted = False
                while not stop.is_set():
                    batch = await intake.next_batch(cfg.batch_interval_s)
                    if not counted and intake.is_subscribed:
                        counted = True
                        self.metrics.mqtt_sessions.inc()
                        self._subscribed.add(f"p{part.index}")
                    if not batch:
                        continue
                    if cache is not None:  # here, not in a task: batches classify in order
                        live, wait = self._partner(f"a{part.index}")
                        await cache.room_for("storage", len(batch), partner_live=live, wait_s=wait)
                    work = self._process(intake, tracker, batch, last, cache)
                    last = tg.create_task(work, name="ingest-batch")
                    in_flight.append(last)
                    while in_flight and (len(in_flight) >= _PIPELINE_DEPTH or in_flight[0].done()):
                        # Wait for the oldest batch, but notice a lost connection meanwhile.
                        await asyncio.wait([in_flight[0], intake.lost], return_when=asyncio.FIRST_COMPLETED)
                        if intake.lost.done():
                            intake.lost.result()  # raises MqttLost: the batches in flight are cut
                        await in_flight.popleft()
                intake.stop_reading()  # 1. take no new work
                await self._process(intake, tracker, intake.take_pending(), last, cache)  # 2. finish, ack
                await intake.disconnect()  # 3. the session stays on the broker
                keepalive.cancel()
        finally:
            self._subscribed.discard(f"p{part.index}")
            self._live.discard(f"p{part.index}")
            intake.close()

    def _read_ahead(self) -> int:
        """Messages a session may hold unread: two batches shared by all the process's sessions.

        Each partition has two sessions; giving each two whole batches let a process holding
        eight partitions keep most of a backlog in memory (over 500 MB).
        """
        held = max(1, len(self._runners), len(self.coordinator.held))
        sessions = held * (2 if self._alerts is not None else 1)
        batch = self.settings.ingest.batch_size
        return max(min(500, batch), 2 * batch // sessions)

    def _subscriptions(self, part: Partition) -> list[Subscription]:
        # Retained statuses only when the subscription is new: afterwards the engine state has them.
        # One options object for all (paho only reads them): a site's filter costs no object of its own.
        readings, statuses = SubscribeOptions(qos=1), SubscribeOptions(qos=1, retainHandling=1)
        topics: list[Subscription] = [(t, readings) for t in part.reading_topics(self._root)]
        topics += [(t, statuses) for t in part.status_topics(self._root)]
        return topics

    # --- the alerts pipeline -------------------------------------------------------------

    async def _judge(self, part: Partition) -> AlertJudge:
        assert self._alerts is not None
        # The deployment's name first: two deployments may share one tasks database.
        cfg = self.settings.ingest
        key = f"{cfg.client_id}/{len(self.partitions)}/{cfg.partitions}/p{part.index}"
        judge = await self._alerts.partition(key, part.devices, lambda: self.coordinator.fence(part.index))
        self._judges[part.index] = judge
        return judge

    async def _alerts_session(self, part: Partition, stop: asyncio.Event) -> None:
        cfg = self.settings.ingest
        judge = self._judges.get(part.index) or await self._judge(part)
        intake = MqttIntake(self.settings.mqtt, cfg, client_id=f"{cfg.client_id}-p{part.index}-alerts",
                            max_pending=self._read_ahead())
        self.intakes[f"a{part.index}"] = intake
        topics = self._subscriptions(part)
        # Judged, to be acknowledged after the next save: only what the PUBACK needs (see
        # MqttIntake.ack_tokens), not the messages: at 10,000 devices the payloads and topics
        # held here until a save were some 20 MB of a process's peak.
        waiting: list[int] = []
        interval = self.settings.alerts.batch_interval_s
        tick_every = self.settings.alerts.tick_s
        checkpoint_every = self.settings.alerts.checkpoint_s
        ticked = acked = time.monotonic()
        try:
            await intake.connect(topics)
            self._live.add(f"a{part.index}")
            async with asyncio.TaskGroup() as tg:
                keepalive = tg.create_task(intake.keepalive(), name=f"mqtt-keepalive-a{part.index}")
                # Idle, wake only for clock work; once a message is there, judge within `interval`.
                idle = min(0.5, checkpoint_every, tick_every)
                while not stop.is_set():
                    batch = await intake.next_batch(interval, idle_s=idle)
                    if intake.is_subscribed:
                        self._subscribed.add(f"a{part.index}")
                    if batch:
                        cache = self._verdicts.get(part.index)
                        if cache is not None:
                            live, wait = self._partner(f"p{part.index}")
                            await cache.room_for("alerts", len(batch), partner_live=live, wait_s=wait)
                        items = self._alert_items(batch, part.index)
                        self.metrics.alerts_judged.inc(len(items))
                        self._alerts_unacked += len(batch)
                        waiting += ack_tokens(batch)
                        if await judge.handle_batch(items, self.events):
                            waiting = self._ack_judged(intake, waiting)  # recorded with the state
                            acked = time.monotonic()
                    if time.monotonic() - ticked >= tick_every:
                        ticked = time.monotonic()
                        await judge.tick(self.events)
                    # Saves of a large partition take long: space them so that saving takes at most
                    # 1/_SAVE_SHARE of the session's time (up to _SAVE_SPACING_MAX_S apart); when
                    # the session is idle (nothing came for `idle`), a quarter of that spacing
                    # after the last save: the end of a burst or a backlog is not left
                    # unacknowledged for seconds, and bursts a little apart do not save each time.
                    every = max(checkpoint_every, min(_SAVE_SPACING_MAX_S, _SAVE_SHARE * judge.last_save_s))
                    if not batch:  # idle: a quarter of the spacing will do
                        every = max(checkpoint_every, every / 4)
                    if waiting and time.monotonic() - acked >= every:
                        await judge.checkpoint()  # saves only if something was judged
                        waiting = self._ack_judged(intake, waiting)
                        acked = time.monotonic()
                intake.stop_reading()
                rest = intake.take_pending()
                if rest:
                    items = self._alert_items(rest, part.index)
                    self.metrics.alerts_judged.inc(len(items))
                    await judge.handle_batch(items, self.events)
                    waiting += ack_tokens(rest)
                    self._alerts_unacked += len(rest)
                await judge.checkpoint()
                waiting = self._ack_judged(intake, waiting)
                await intake.disconnect()
                keepalive.cancel()
        finally:
            self._subscribed.discard(f"a{part.index}")
            self._live.discard(f"a{part.index}")
            self._alerts_unacked -= len(waiting)
            intake.close()

    def _partner(self, session: str) -> tuple[bool, float | None]:
        """Whether the other session of a partition may be waited for, and for how long at most.

        ``session`` is ``a<n>`` (the alerts session, which storage may wait for) or ``p<n>``.
        A live session is waited for the cache's bound, unless its stage cannot work now (the
        alerts database or InfluxDB down); one still starting, until its start grace ends.
        """
        part = int(session[1:])
        if session not in self._live:
            left = self._starting.get(session, 0.0) - time.monotonic()
            return left > 0, left
        if session[0] == "a":
            judge = self._judges.get(part)
            return judge is not None and not judge.degraded, None
        return self.storage.is_healthy, None

    def _ack_judged(self, intake: MqttIntake, waiting: list[int]) -> list[int]:
        intake.ack_tokens(waiting)
        self._alerts_unacked -= len(waiting)
        return []

    def _alert_items(self, batch: list[Incoming], part: int) -> list[Reading | GatewayStatus]:
        """What alerts judges, in arrival order; the storage session quarantines the rest."""
        now = self._now()
        items: list[Reading | GatewayStatus] = []
        cache = self._verdicts.get(part)
        before = (cache.hits, cache.misses) if cache is not None else (0, 0)
        for message in batch:
            try:
                if cache is not None:
                    verdict = cache.verdict(message, root=self._root, now=now, registry=self.registry,
                                            side="alerts")
                else:
                    verdict = classify(message.topic, message.payload, root=self._root, now=now,
                                       registry=self.registry)
            except Exception:  # counted and quarantined by the storage session
                continue
            if isinstance(verdict, Reading | GatewayStatus):
                items.append(verdict)
        self._count_parses(cache, before, len(batch))
        return items

    def _count_parses(self, cache: VerdictCache | None, before: tuple[int, int], messages: int) -> None:
        if cache is None:
            self.metrics.parsed.inc(messages)
            return
        self.metrics.parsed.inc(cache.misses - before[1])
        self.metrics.parses_shared.inc(cache.hits - before[0])

    # --- a partition: both sessions, each in its own reconnection loop -----------------------

    async def _keep_running(
        self,
        name: str,
        session: Callable[[], Coroutine[Any, Any, None]],
        stop: asyncio.Event,
        moved: asyncio.Event,
    ) -> None:
        """Run ``session`` until ``stop``; reconnect after failures. A stage failing stays alone.

        A session taken over by another client with the same id (the partition moved) or an
        alerts write refused by the fence sets ``moved``: the partition is given up.
        """
        backoff = Backoff(0.5, _BACKOFF_CAP_S, jitter=1.0, rand=self._rng.random)
        while not stop.is_set() and not moved.is_set():
            began = time.monotonic()
            error = ""
            try:
                await session()
                continue
            except* SessionTakenOver:
                log.warning("partition.taken_over", extra={"session": name})
                moved.set()
            except* MqttLost as group:
                error = str(group.exceptions[0])
            except* UsageError:
                raise  # a configuration fault (a rule pack, an override): retrying cannot mend it
            except* Exception as group:
                if any(_partition_lost(e) for e in group.exceptions):
                    log.warning("partition.lost", extra={"session": name})
                    moved.set()
                else:
                    log.error("session.failed", extra={"session": name, "error": repr(group.exceptions[0])},
                              exc_info=group.exceptions[0])
                    error = repr(group.exceptions[0])
            if moved.is_set():
                return
            if time.monotonic() - began >= _GOOD_SESSION_S:
                backoff.reset()  # a session that went well: start again from 0.5 s
            delay = backoff.next()
            log.warning("mqtt.lost", extra={"session": name, "error": error, "retry_in_s": round(delay, 2)})
            await _sleep_unless(stop, delay)

    async def _attempt(self, session: str, body: Coroutine[Any, Any, None]) -> None:
        """One attempt of a session; however it ends, its start grace ends with it.

        Even one that failed before it connected (loading its state or its dedup store): its
        partner no longer waits for it (see :meth:`_partner`).
        """
        try:
            await body
        finally:
            self._starting.pop(session, None)

    async def _run_partition(self, part: Partition, stop: asyncio.Event) -> None:
        moved = asyncio.Event()
        quit_ = asyncio.Event()

        async def watch() -> None:
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(moved.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            quit_.set()

        n = part.index
        if self._alerts is not None:  # both sessions see every message: parse each once
            self._verdicts[n] = VerdictCache(2 * self._read_ahead())  # bounded like the read-ahead
            until = time.monotonic() + _PARTNER_START_GRACE_S  # the first start of each: see _partner
            self._starting.update({f"p{n}": until, f"a{n}": until})
        async with asyncio.TaskGroup() as tg:
            tg.create_task(watch(), name=f"partition-watch-{n}")
            storage = lambda: self._attempt(f"p{n}", self._storage_session(part, quit_))  # noqa: E731
            tg.create_task(self._keep_running(f"p{n}", storage, quit_, moved), name=f"storage-p{n}")
            if self._alerts is not None:
                judging = lambda: self._attempt(f"a{n}", self._alerts_session(part, quit_))  # noqa: E731
                tg.create_task(self._keep_running(f"p{n}-alerts", judging, quit_, moved), name=f"alerts-p{n}")
            if n == self._first_partition and self.settings.ingest.catch_unknown_sites:
                tg.create_task(self._keep_running("strays", lambda: self._strays_session(quit_), quit_,
                                                  moved), name="strays")
        self._judges.pop(n, None)
        self._verdicts.pop(n, None)
        self._starting.pop(f"p{n}", None)
        self._starting.pop(f"a{n}", None)
        if moved.is_set() and not stop.is_set():
            stop.set()  # tell the manager: this partition is no longer ours

    async def _strays_session(self, stop: asyncio.Event) -> None:
        """Quarantine readings of sites absent from the registry (QoS 0: nothing is queued)."""
        cfg = self.settings.ingest
        prefix = (self._root + "/").encode()
        known = {s.encode() for s in self.registry.sites}

        def keep(topic: bytes) -> bool:
            return not topic.startswith(prefix) or topic[len(prefix):].split(b"/", 1)[0] not in known

        intake = MqttIntake(self.settings.mqtt, cfg, client_id=f"{cfg.client_id}-strays-{id(self):x}",
                            keep=keep, persistent=False)
        try:
            await intake.connect([(f"{self._root}/+/+/reading", SubscribeOptions(qos=0))])
            async with asyncio.TaskGroup() as tg:
                keepalive = tg.create_task(intake.keepalive(), name="mqtt-keepalive-strays")
                while not stop.is_set():
                    batch = await intake.next_batch(cfg.batch_interval_s)
                    if batch:
                        self.metrics.parsed.inc(len(batch))
                        _, _, refused = classify_batch(batch, root=self._root, now=self._now(),
                                                       registry=self.registry)
                        if refused:
                            await self.quarantine.add(refused, self._now())
                            for q in refused:
                                self.metrics.rejected.labels(q.reason).inc()
                await intake.disconnect()
                keepalive.cancel()
        finally:
            intake.close()

    # --- the process's own connection: alert events out --------------------------------------

    async def _control_session(self, stop: asyncio.Event) -> None:
        cfg = self.settings.ingest
        intake = MqttIntake(self.settings.mqtt, cfg, client_id=f"{cfg.client_id}-events-{id(self):x}",
                            persistent=False)
        try:
            await intake.connect([])
            self._control = intake
            self.metrics.mqtt_connected.set(1)
            await intake.keepalive()  # raises MqttLost when the connection is lost
        finally:
            self._control = None
            self.metrics.mqtt_connected.set(0)
            intake.close()

    async def _publish_events(self) -> None:
        while True:
            event = await self.events.get()
            try:
                await self.storage.store(alert_line(event).encode(), 1)
                payload = event.model_dump_json().encode()
                while True:
                    intake = self._control
                    if intake is not None:
                        try:
                            await intake.publish(alert_topic(self._root, event.site_id), payload)
                            break
                        except MqttLost as exc:
                            log.warning("alert.publish_failed", extra={"error": str(exc)})
                    await asyncio.sleep(0.5)
            finally:
                self.events.task_done()

    # --- partitions: claim, run, give back ----------------------------------------------------

    async def _guarded_partition(self, part: Partition, stop: asyncio.Event) -> None:
        """A partition that fails is given up and claimed again; it never ends the process."""
        try:
            await self._run_partition(part, stop)
        except Exception:
            log.exception("partition.failed", extra={"partition": part.index})
            stop.set()

    def _start(self, tg: asyncio.TaskGroup, index: int) -> None:
        stop = asyncio.Event()
        part = self.partitions[index]
        task = tg.create_task(self._guarded_partition(part, stop), name=f"partition-{index}")
        self._runners[index] = (task, stop)
        log.info("partition.started", extra={"partition": index})

    async def _stop(self, *indices: int) -> None:
        """Stop partitions together: drain for ``drain_timeout_s``, then cancel what is left.

        Cancelling loses nothing: what a session has not acknowledged stays with the broker.
        """
        runners = [self._runners.pop(i) for i in indices if i in self._runners]
        for _, stop in runners:
            stop.set()
        tasks = [task for task, _ in runners]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self.settings.ingest.drain_timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        log.info("partition.stopped", extra={"partitions": sorted(indices), "cancelled": len(late)})

    async def _manage(self, tg: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        coordinator = self.coordinator
        interval = self.settings.ingest.claim_interval_s
        while not stop.is_set():
            result = await coordinator.round()
            await self._stop(*result.lost)
            if result.surplus:  # a process joined: give these back cleanly
                await self._stop(*result.surplus)
                for index in result.surplus:
                    await coordinator.unlock(index)
            gone = [i for i, (task, run_stop) in self._runners.items() if run_stop.is_set() or task.done()]
            if gone:  # moved away under us: give them up
                await self._stop(*gone)
                for index in gone:
                    await coordinator.unlock(index)
            for index in sorted(coordinator.held - set(self._runners)):  # claimed, or held unrun
                self._start(tg, index)
            settling = coordinator.settling_s()  # joined at start-up: claim as soon as it may
            await _sleep_unless(stop, min(interval, settling) if settling > 0 else interval)
        await self._stop(*self._runners)

    # --- the whole service -------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected, holding partitions, and every session of them subscribed."""
        want = {f"p{i}" for i in self._runners}
        if self._alerts is not None:
            want |= {f"a{i}" for i in self._runners}
        return self._control is not None and bool(want) and want <= self._subscribed

    def _is_degraded(self, stage: str) -> Callable[[], float]:
        return lambda: float(stage in self.degraded())

    def degraded(self) -> list[str]:
        """The stages that cannot do their work now (``/healthz`` and ``ingest_stage_degraded``)."""
        alerts = self._alerts
        states = {
            "influx": self.storage.is_healthy,
            "alerts": alerts is None
            or (not alerts.error and not any(j.degraded for j in list(self._judges.values()))),
            "outbox": not getattr(alerts, "outbox_degraded", False),
            "coordinator": getattr(self.coordinator, "is_connected", True),
        }
        return [name for name, ok in states.items() if not ok]

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` says: ok while connected to the broker; each stage's state."""
        degraded = self.degraded()
        influx_ok = "influx" not in degraded
        alerts_ok = "alerts" not in degraded
        coordinator_ok = "coordinator" not in degraded
        return {
            "ok": self._control is not None,
            "ready": self.ready,
            "mqtt_connected": self._control is not None,
            "influx_healthy": influx_ok,
            "alerts_healthy": alerts_ok,
            "coordinator_connected": coordinator_ok,
            "degraded": degraded,
            "partitions": sorted(self._runners),
            "members": getattr(self.coordinator, "members", 1),
            "spool_points": self.spool.points,
            "alerts_lag": self._alerts_unacked,
        }

    async def _standby(self, stop: asyncio.Event) -> bool:
        """With local coordination: wait, opening nothing, until this process holds the lock file.

        A second process on the machine (the same configuration: the same port, spool and
        databases) is a standby; it binds no port and touches no file until the first one exits.
        Returns False if ``stop`` came first.
        """
        coordinator = self.coordinator
        assert isinstance(coordinator, LocalCoordinator)
        told = False
        while not stop.is_set():
            await coordinator.round()
            if coordinator.locked:
                if told:
                    log.warning("coordinator.standby_active", extra={"path": str(self._lock_path())})
                return True
            if not told:
                log.warning("coordinator.standby", extra={"path": str(self._lock_path())})
                told = True
            await _sleep_unless(stop, self.settings.ingest.claim_interval_s)
        return False

    def _status_server(self, loop: asyncio.AbstractEventLoop) -> StatusServer:
        cfg = self.settings.ingest
        assert cfg.metrics_port is not None
        try:
            return StatusServer(cfg.metrics_host, cfg.metrics_port, self.metrics.registry, self.health, loop)
        except OSError as exc:
            raise ServiceError(
                f"[ingest] metrics_port: cannot listen on {cfg.metrics_host}:{cfg.metrics_port} "
                f"({exc.strerror}); each ingest process on a machine needs its own metrics_port "
                "(0: any free port)"
            ) from exc

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then stop intake, flush, acknowledge and close."""
        cfg = self.settings.ingest
        server = None
        try:
            if isinstance(self.coordinator, LocalCoordinator) and not await self._standby(stop):
                return  # stopped while the other process held the lock
            await self.spool.open()
            self.metrics.spool_depth.set(self.spool.points)
            if self.spool.backlog:  # left by a version before partitions: stored, never judged
                log.warning("alerts.legacy_backlog_not_judged", extra={"items": self.spool.backlog,
                                                                        "spool": str(cfg.spool_path)})
            if cfg.metrics_port is not None:
                server = self._status_server(asyncio.get_running_loop()).start()
                self.http_port = server.port
            started = {"spool_points": self.spool.points, "partitions": len(self.partitions),
                       "alerts": self._alerts is not None}
            log.info("ingest.started", extra=started)
            async with asyncio.TaskGroup() as tg:
                background = [
                    tg.create_task(self.storage.drain(), name="spool-drain"),
                    tg.create_task(self._keep_running("events", lambda: self._control_session(stop), stop,
                                                      asyncio.Event()), name="mqtt-events"),
                ]
                if self._alerts is not None:
                    background += [
                        tg.create_task(self._alerts.run(), name="alerts-outbox"),
                        tg.create_task(self._publish_events(), name="alert-events-out"),
                    ]
                await tg.create_task(self._manage(tg, stop), name="partitions")
                try:
                    async with asyncio.timeout(cfg.drain_timeout_s):
                        await self.events.join()  # the events of the final batches, out too
                        await self.storage.flush()
                except TimeoutError:
                    left = {"points": self.spool.points, "events": self.events.qsize()}
                    log.warning("shutdown.left", extra=left)
                for task in background:
                    task.cancel()
        finally:
            if server is not None:
                await asyncio.to_thread(server.close)
            await self.coordinator.close()
            await self.storage.close_writer()
            if self._alerts is not None:
                self._alerts.close()
            for store in (self.quarantine, self.spool, self._dedup):
                await asyncio.to_thread(store.close)
            log.info("ingest.stopped")
