"""The alerts shell: feeds the engine, persists its decisions, opens tasks, notifies.

It reads ingest's queue and the clock, writes alerts, tasks and the outbox, delivers
notifications, and hands alert events back to ingest.

Ingest wires it::

    service = AlertService.from_settings(settings, registry)
    await service.run(inbox, events)   # inbox: Reading | GatewayStatus; events: AlertEvent

alerts knows no MQTT and no InfluxDB: ingest publishes and stores the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
from sqlalchemy.exc import SQLAlchemyError

from alerts.dispatch import Dispatch, Plan, plan
from alerts.engine import (
    GATEWAY_OFFLINE_RULE,
    Acknowledge,
    AddSilence,
    DeviceInfo,
    EngineConfig,
    EngineState,
    Event,
    Silence,
    Tick,
    Transition,
    restore,
    snapshot,
    step,
)
from alerts.notify import Notifier, OutboxWorker, build_channels
from alerts.store import Fence, OutboxItem, PartitionLost, Store, TasksDbUnavailable, in_db_thread
from weijian.backoff import Backoff
from weijian.config import Settings
from weijian.contract import AlertEvent, AlertState, GatewayStatus, Kind, Reading
from weijian.registry import Registry
from weijian.rules import DEFAULT_RULES_DIR, Rule, RulePack, load_rule_packs, rules_for_site

__all__ = ["AlertService", "AlertStage", "PartitionLost", "build_engine_config", "load_packs", "new_silence"]

log = logging.getLogger(__name__)

_OVERDUE_LEVEL: Final = 3  # overdue tasks go to the district's supervisors
_CONSUME_BATCH: Final = 1000  # inbox items stepped per database transaction
_RECORD_RETRY_FIRST_S: Final = 0.5
_RECORD_RETRY_MAX_S: Final = 30.0


def _identity(event: Event) -> str:
    if isinstance(event, Reading):
        return f"reading {event.gateway_id}#{event.seq} {event.site_id}/{event.device_id}"
    if isinstance(event, GatewayStatus):
        return f"status {event.gateway_id}"
    return type(event).__name__


def load_packs(settings: Settings) -> dict[Kind, RulePack]:
    """The rule packs of ``[alerts] rules_dir`` (the shipped ones by default).

    Raises:
        RulePackError: a pack is unreadable or invalid (names the file and the key).
    """
    return load_rule_packs(settings.alerts.rules_dir or DEFAULT_RULES_DIR)


def _earlier_layouts(saved: Mapping[str, dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The rows a partition without its own starts from: its deployment's, under other layouts.

    Keys are ``{deployment}/{partitions with sites}/{partitions}/p{n}``; rows keyed without the
    deployment (``8/8/p3``, before deployments sharing a database were told apart) count as
    this deployment's. Another deployment's rows are not this one's.
    """
    deployment = key.split("/", 1)[0] + "/" if key.count("/") == 3 else None
    return [row for k, row in saved.items()
            if k.count("/") == 2 or (deployment is not None and k.startswith(deployment))]


def build_engine_config(
    settings: Settings, registry: Registry, scope: Collection[tuple[str, str]] | None = None,
    packs: Mapping[Kind, RulePack] | None = None,
) -> tuple[EngineConfig, Dispatch]:
    """Devices with the rules in force at each (overrides applied), and the dispatch context.

    Args:
        settings: all settings.
        registry: the site registry.
        scope: only these ``(site_id, device_id)`` (one partition); None for every device.
        packs: the rule packs, loaded once (:func:`load_packs`); None loads them.
    """
    if packs is None:
        packs = load_packs(settings)
    devices = {}
    site_rules: dict[str, list[Rule]] = {}
    for site, device in registry.devices():
        if scope is not None and (site.id, device.id) not in scope:
            continue
        in_force = site_rules.get(site.id)
        if in_force is None:
            in_force = site_rules[site.id] = list(rules_for_site(site, packs, site.overrides))
        rules = tuple(r for r in in_force if r.metric is None or r.metric in device.metrics)
        devices[(site.id, device.id)] = DeviceInfo(
            site.id, device.id, site.kind, site.district, registry.gateway_of(site.id, device.id), rules
        )
    a = settings.alerts
    config = EngineConfig(
        devices=devices,
        late_after=timedelta(seconds=a.late_after_s),
        repeat_interval=timedelta(minutes=a.repeat_interval_min),
        escalate_after=tuple(timedelta(minutes=m) for m in a.escalate_after_min),
    )
    rules_by_id = {r.id: r for pack in packs.values() for r in pack.rules}
    return config, Dispatch(registry, rules_by_id, a)


class AlertService:
    """The running alerts stage.

    Args:
        settings: all settings (uses ``[alerts]``, ``[tasks]``, ``[sms]``).
        registry: the site registry.
        store: the alerts database.
        channels: notification channels by name.
        now: the clock (wall time by default; a replayed day in demos and tests).
    """

    def __init__(self, settings: Settings, registry: Registry, store: Store,
                 channels: dict[str, Notifier], now: Callable[[], datetime], *,
                 scope: Collection[tuple[str, str]] | None = None, state_key: str | None = None,
                 fence: Callable[[], tuple[int, int, int] | None] | None = None,
                 worker: OutboxWorker | None = None, packs: Mapping[Kind, RulePack] | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.now = now
        config, self.dispatch = build_engine_config(settings, registry, scope, packs)
        self.state = EngineState(config=config)
        self._state_key = state_key
        self._fence = fence
        self._epoch: int | None = None
        if state_key is not None:
            # The fencing token first: a former holder's write still in flight commits before
            # this (and is loaded below) or fails on the epoch after it.
            self._epoch = store.take_over(state_key, now())
            saved = {k: json.loads(v) for k, v in store.engine_states().items()}
            own = saved.get(state_key, {})
            rows = [own] if own.get("v") else _earlier_layouts(saved, state_key)
            for row in rows:  # another layout's rows when this partition has none of its own
                restore(self.state, row)
        gateways = {d.gateway_id for d in config.devices.values()}
        for alert in store.open_alerts():  # a restart forgets no open alert and fires none twice
            if (alert.site_id, alert.device_id) in config.devices or (
                alert.device_id in gateways and alert.rule_id == GATEWAY_OFFLINE_RULE.id
            ):
                self.state.alerts[alert.key] = alert
        self.state.silences.extend(store.silences(active_at=now()))
        self._dirty = False
        self.worker = worker or OutboxWorker(store, channels, settings.alerts, now=now)
        self.readings = 0
        self.degraded = False  # the last write failed: /healthz names the alerts stage
        self.last_save_s = 0.0  # how long the last save of the engine state took (ingest paces saves)

    @classmethod
    def from_settings(cls, settings: Settings, registry: Registry,
                      now: Callable[[], datetime] | None = None) -> AlertService:
        """Build the service: open the database, load the rule packs, load open alerts.

        Raises:
            TasksDbUnavailable: the database cannot be reached.
            RulePackError: a rule pack is invalid.
        """
        from weijian.clock import Clock

        clock = Clock(settings.clock)
        store = Store(settings.tasks.url, settings.alerts.db_timeout_s)
        return cls(settings, registry, store, build_channels(settings.sms, settings.alerts),
                   now or clock.now)

    # --- the core loop ------------------------------------------------------------------------

    async def handle(self, event: Event, events: asyncio.Queue[AlertEvent] | None = None) -> list[Transition]:
        """Step the engine with one event, persist the outcome, and emit alert events."""
        return await self.handle_batch([event], events)

    async def handle_batch(
        self, batch: Sequence[Event], events: asyncio.Queue[AlertEvent] | None = None
    ) -> list[Transition]:
        """Step the engine with each event in order, then persist all outcomes in one transaction.

        An event the engine fails on is logged with its identity and skipped; the others count.
        """
        now = self.now()
        transitions: list[Transition] = []
        for event in batch:
            try:
                _, out = step(self.state, event, now)
            except Exception:
                log.exception("alerts.item_failed", extra={"item": _identity(event)})
                continue
            transitions.extend(out)
        self._dirty = self._dirty or bool(batch)
        if not transitions:
            return []
        p = plan(self.dispatch, transitions)
        await self._record(p, now)  # wakes the outbox worker once committed
        for t in transitions:
            if t.kind.state is AlertState.FIRING:
                log.info("alert.firing", extra={"alert_id": t.alert.alert_id, "rule": t.alert.rule_id,
                                                "site_id": t.alert.site_id, "late": t.late})
        if events is not None:
            for ev in p.events:
                await events.put(ev)
        return transitions

    async def _record(self, p: Plan, now: datetime) -> None:
        """Write the outcome, retrying with backoff while the database is unavailable.

        The engine's state already holds these transitions, so giving up would leave alerts
        open in memory that no task or notification ever follows. Meanwhile the inbox fills
        and ingest moves what follows to its durable backlog: nothing is lost, only delayed.
        """
        backoff = Backoff(_RECORD_RETRY_FIRST_S, _RECORD_RETRY_MAX_S, jitter=0.5)
        while True:
            try:
                state: tuple[str, str] | None = None
                fence: Fence | None = None
                if self._fence is not None:
                    held = self._fence()  # ConnectionError while the coordinator reconnects
                    fence = Fence(*held) if held is not None else None
                if self._state_key is not None:
                    state = (self._state_key, json.dumps(snapshot(self.state), separators=(",", ":")))
                began = time.monotonic()
                await in_db_thread(self._record_now, p, now, state, fence)
                if state is not None:
                    self.last_save_s = time.monotonic() - began
                self._dirty = False
                self.degraded = False
                return
            except (TasksDbUnavailable, ConnectionError) as exc:
                self.degraded = True
                delay = backoff.next()
                log.error("alerts.store_unavailable",
                          extra={"error": str(exc), "retry_in_s": round(delay, 2)})
                await asyncio.sleep(delay)

    def _record_now(self, p: Plan, now: datetime, state: tuple[str, str] | None, fence: Fence | None) -> None:
        """In a worker thread: commit, then wake the outbox at once (not after our loop's next turn)."""
        self.store.record(p.alerts, p.tasks, p.outbox, p.audits, now, state=state, fence=fence,
                          epoch=self._epoch)
        if p.outbox:
            self.worker.poke()

    async def checkpoint(self) -> None:
        """Save the engine state if anything was judged since the last save.

        What was judged is acknowledged only after this (or a recording of transitions)
        commits, so a successor that rebuilds the state judges no reading twice.

        Raises:
            PartitionLost: another process holds this partition now.
        """
        if self._dirty and self._state_key is not None:
            await self._record(Plan(), self.now())
        self._dirty = False

    async def tick(self, events: asyncio.Queue[AlertEvent] | None = None) -> None:
        """Clock work: new silences, acknowledgements, repeats, escalations, interruptions, overdue tasks.

        An alert whose task was claimed (by the CLI or the API, maybe in another process), or
        claimed and closed since the last tick, is acknowledged here.
        """
        known = {s.id for s in self.state.silences}
        for silence in await in_db_thread(self.store.silences, active_at=self.now()):
            if silence.id not in known:  # recorded by `weijian tasks silence add` (another process)
                log.info("silence.applied", extra={"silence_id": silence.id, "site_id": silence.site_id})
                await self.handle(AddSilence(silence), events)
        firing = [a.alert_id for a in self.state.alerts.values() if a.state is AlertState.FIRING]
        if firing:
            claimed = await in_db_thread(self._claimed, firing)
            for alert_id, who in claimed:
                await self.handle(Acknowledge(alert_id, who), events)
        await self.handle(Tick(), events)
        now = self.now()
        devices = self.state.config.devices
        for task in await in_db_thread(self.store.overdue_tasks, now):
            if (task["site_id"], task["device_id"]) not in devices and self._state_key is not None:
                continue  # another partition's task (the gateway-offline ones: see below)
            p = _overdue_plan(self.dispatch, task, now)
            # Conditional in the database: of several processes, one queues the messages.
            await in_db_thread(self.store.mark_escalated, task["id"], now, p.outbox)

    def _claimed(self, alert_ids: list[str]) -> list[tuple[str, str]]:
        # Claimed, or already closed: both can happen between two ticks.
        return self.store.taken_tasks(alert_ids)

    async def silence(self, silence: Silence) -> None:
        """Record a maintenance window and apply it."""
        await in_db_thread(self.store.add_silence, silence)
        await self.handle(AddSilence(silence))

    async def run(self, inbox: asyncio.Queue[Reading | GatewayStatus],
                  events: asyncio.Queue[AlertEvent]) -> None:
        """Consume ``inbox`` until cancelled; tick on a timer; deliver notifications.

        Every item gets ``inbox.task_done()``, even one that failed (it is logged), so
        ingest's drain (``inbox.join()``) always finishes.
        """
        async with httpx.AsyncClient() as client, asyncio.TaskGroup() as tg:
            tg.create_task(self._consume(inbox, events), name="alerts-consume")
            tg.create_task(self._ticker(events), name="alerts-ticker")
            tg.create_task(self.worker.run(client), name="alerts-outbox")

    async def _consume(self, inbox: asyncio.Queue[Reading | GatewayStatus],
                       events: asyncio.Queue[AlertEvent]) -> None:
        while True:
            batch = [await inbox.get()]  # then whatever else is waiting: one transaction for all
            while len(batch) < _CONSUME_BATCH and not inbox.empty():
                batch.append(inbox.get_nowait())
            try:
                self.readings += len(batch)
                await self.handle_batch(batch, events)
            except Exception:
                # The database failed: log it and go on; alerting must not stop.
                log.exception("alerts.batch_failed", extra={"items": len(batch)})
            finally:
                for _ in batch:
                    inbox.task_done()

    async def _ticker(self, events: asyncio.Queue[AlertEvent]) -> None:
        while True:
            try:
                await self.tick(events)
            except Exception:
                log.exception("alerts.tick_failed")
            await asyncio.sleep(self.settings.alerts.tick_s)

    def close(self) -> None:
        """Release the database."""
        self.store.close()


class AlertStage:
    """The alerts stage as ingest runs it: one database and outbox, one engine per partition.

    Ingest wires it::

        stage = AlertStage.from_settings(settings, registry)
        await stage.open()                       # retries while the database is down
        judge = await stage.partition("8/p3", devices, fence)  # state rebuilt from the database
        await judge.handle_batch(items, events)  # then judge.checkpoint() before acknowledging
        await stage.run()                        # the outbox worker, in its own task

    Args:
        settings: all settings.
        registry: the site registry.
        now: the clock.
    """

    def __init__(self, settings: Settings, registry: Registry, now: Callable[[], datetime]) -> None:
        self.settings = settings
        self.registry = registry
        self.now = now
        self.packs = load_packs(settings)  # a bad rule pack stops the program at start (exit 2)
        self.store: Store | None = None
        self.channels = build_channels(settings.sms, settings.alerts)
        self.worker: OutboxWorker | None = None
        self.error = ""
        self._opening = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, registry: Registry,
                      now: Callable[[], datetime] | None = None) -> AlertStage:
        """Build the stage (no I/O yet: :meth:`open` connects)."""
        from weijian.clock import Clock

        return cls(settings, registry, now or Clock(settings.clock).now)

    async def open(self) -> Store:
        """Open the database (migrating it), retrying with backoff while it is unavailable."""
        async with self._opening:
            return await self._open()

    async def _open(self) -> Store:
        backoff = Backoff(_RECORD_RETRY_FIRST_S, _RECORD_RETRY_MAX_S, jitter=0.5)
        while self.store is None:
            try:
                self.store = await in_db_thread(
                    Store, self.settings.tasks.url, self.settings.alerts.db_timeout_s
                )
            except TasksDbUnavailable as exc:
                delay = backoff.next()
                if str(exc) != self.error:
                    log.error("alerts.store_unavailable",
                              extra={"error": str(exc), "retry_in_s": round(delay, 2)})
                self.error = str(exc)
                await asyncio.sleep(delay)
        self.error = ""
        if self.worker is None:
            self.worker = OutboxWorker(self.store, self.channels, self.settings.alerts, now=self.now)
        return self.store

    async def partition(self, key: str, scope: Collection[tuple[str, str]],
                        fence: Callable[[], tuple[int, int, int] | None]) -> AlertService:
        """An engine for one partition, its open alerts and state loaded from the database.

        Raises:
            TasksDbUnavailable: the database failed while loading.
        """
        store = await self.open()
        try:
            return await in_db_thread(
                AlertService, self.settings, self.registry, store, self.channels, self.now,
                scope=scope, state_key=key, fence=fence, worker=self.worker, packs=self.packs,
            )
        except SQLAlchemyError as exc:
            raise TasksDbUnavailable(f"cannot load the alerts of partition {key}: {exc}") from exc

    @property
    def outbox_degraded(self) -> bool:
        """Whether the outbox could not be read at the worker's last try."""
        return self.worker is not None and self.worker.degraded

    async def run(self) -> None:
        """Deliver notifications until cancelled (claimed before sending, once across processes).

        The worker runs on an event loop of its own, in a thread: on ingest's loop each of its
        database round trips and HTTP steps waited behind whole batches of other readings being
        parsed, which made up most of an alert's time from reading to SMS.
        """
        await self.open()
        worker = self.worker
        assert worker is not None
        caller = asyncio.get_running_loop()
        ended: asyncio.Future[None] = caller.create_future()
        loop = asyncio.new_event_loop()

        async def deliver() -> None:
            async with httpx.AsyncClient() as client:
                await worker.run(client)

        task = loop.create_task(deliver(), name="alerts-outbox")

        def outbox_thread() -> None:
            error: BaseException | None = None
            try:
                loop.run_until_complete(task)
            except asyncio.CancelledError:
                pass
            except BaseException as exc:  # handed to the awaiting task, never lost in the thread
                error = exc
            finally:
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

            def settle() -> None:
                if ended.done():
                    return
                if error is None:
                    ended.set_result(None)
                else:
                    ended.set_exception(error)

            with contextlib.suppress(RuntimeError):  # the caller's loop is already closed
                caller.call_soon_threadsafe(settle)

        thread = threading.Thread(target=outbox_thread, name="alerts-outbox", daemon=True)
        thread.start()
        try:
            await asyncio.shield(ended)
        finally:
            if not task.done():
                with contextlib.suppress(RuntimeError):  # the thread's loop closed meanwhile
                    loop.call_soon_threadsafe(task.cancel)
            await asyncio.to_thread(thread.join, 10.0)

    def close(self) -> None:
        """Release the database."""
        if self.store is not None:
            self.store.close()


def _overdue_plan(d: Dispatch, task: dict[str, object], now: datetime) -> Plan:
    p = Plan()
    district = d.registry.districts.get(str(task["district"]))
    if district is None:
        return p
    text = f"【卫监督办】巡查核查任务#{task['id']}已超时未办结：{task['title']}"
    for c in district.supervisors:
        key = f"task:{task['id']}:overdue:{c.phone}"
        p.outbox.append(OutboxItem(key, "sms", c.phone, {
            "task_id": task["id"], "alert_id": task["alert_id"], "reason": "task_overdue",
            "level": _OVERDUE_LEVEL, "at": now.isoformat(), "text": text, "to": c.phone,
            "idempotency_key": key,
        }, str(task["alert_id"])))
    return p


def new_silence(site_id: str, hours: float, reason: str, by: str, *, device_id: str | None = None,
                rule_id: str | None = None, starts: datetime | None = None) -> Silence:
    """A silence starting now (or ``starts``) for ``hours``."""
    begin = (starts or datetime.now(UTC)).astimezone(UTC)  # the store keeps UTC
    return Silence(uuid.uuid4().hex[:16], site_id, begin, begin + timedelta(hours=hours), reason, by,
                   device_id, rule_id)
