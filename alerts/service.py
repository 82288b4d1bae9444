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
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import httpx

from alerts.dispatch import Dispatch, Plan, plan
from alerts.engine import (
    Acknowledge,
    AddSilence,
    DeviceInfo,
    EngineConfig,
    EngineState,
    Event,
    Silence,
    Tick,
    Transition,
    step,
)
from alerts.notify import Notifier, OutboxWorker, build_channels
from alerts.store import OutboxItem, Store, StoreUnavailable
from weijian.config import Settings
from weijian.contract import AlertEvent, AlertState, GatewayStatus, Reading
from weijian.registry import Registry
from weijian.rules import DEFAULT_RULES_DIR, load_rule_packs, rules_for_site

__all__ = ["AlertService", "build_engine_config", "new_silence"]

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


def build_engine_config(settings: Settings, registry: Registry) -> tuple[EngineConfig, Dispatch]:
    """Devices with the rules in force at each (overrides applied), and the dispatch context."""
    packs = load_rule_packs(settings.alerts.rules_dir or DEFAULT_RULES_DIR)
    devices = {}
    for site, device in registry.devices():
        rules = tuple(
            r for r in rules_for_site(site, packs, site.overrides)
            if r.metric is None or r.metric in device.metrics
        )
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
                 channels: dict[str, Notifier], now: Callable[[], datetime]) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.now = now
        config, self.dispatch = build_engine_config(settings, registry)
        self.state = EngineState(config=config)
        for alert in store.open_alerts():  # a restart forgets no open alert and fires none twice
            self.state.alerts[alert.key] = alert
        self.state.silences.extend(store.silences())
        self.worker = OutboxWorker(store, channels, settings.alerts, now=now)
        self.readings = 0

    @classmethod
    def from_settings(cls, settings: Settings, registry: Registry,
                      now: Callable[[], datetime] | None = None) -> AlertService:
        """Build the service: open the database, load the rule packs, load open alerts.

        Raises:
            StoreUnavailable: the database cannot be reached.
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
        if not transitions:
            return []
        p = plan(self.dispatch, transitions)
        await self._record(p, now)
        if p.outbox:
            self.worker.wake.set()
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
        delay = _RECORD_RETRY_FIRST_S
        while True:
            try:
                await asyncio.to_thread(self.store.record, p.alerts, p.tasks, p.outbox, p.audits, now)
                return
            except StoreUnavailable as exc:
                log.error("alerts.store_unavailable", extra={"error": str(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECORD_RETRY_MAX_S)

    async def tick(self, events: asyncio.Queue[AlertEvent] | None = None) -> None:
        """Clock work: new silences, acknowledgements, repeats, escalations, interruptions, overdue tasks.

        An alert whose task was claimed (by the CLI or the API, maybe in another process) is
        acknowledged here.
        """
        known = {s.id for s in self.state.silences}
        for silence in await asyncio.to_thread(self.store.silences):
            if silence.id not in known:  # recorded by `weijian tasks silence add` (another process)
                log.info("silence.applied", extra={"silence_id": silence.id, "site_id": silence.site_id})
                await self.handle(AddSilence(silence), events)
        firing = [a.alert_id for a in self.state.alerts.values() if a.state is AlertState.FIRING]
        if firing:
            claimed = await asyncio.to_thread(self._claimed, firing)
            for alert_id, who in claimed:
                await self.handle(Acknowledge(alert_id, who), events)
        await self.handle(Tick(), events)
        now = self.now()
        for task in await asyncio.to_thread(self.store.overdue_tasks, now):
            p = _overdue_plan(self.dispatch, task, now)
            await asyncio.to_thread(self.store.mark_escalated, task["id"], now, p.outbox)

    def _claimed(self, alert_ids: list[str]) -> list[tuple[str, str]]:
        wanted = set(alert_ids)
        return [(t["alert_id"], t["assignee"] or "?") for t in self.store.tasks(status="claimed")
                if t["alert_id"] in wanted]

    async def silence(self, silence: Silence) -> None:
        """Record a maintenance window and apply it."""
        await asyncio.to_thread(self.store.add_silence, silence)
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
