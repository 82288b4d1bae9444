"""The rule engine: readings, gateway status and clock ticks in, alert transitions out.

``step(state, event, now) -> (state, transitions)`` does no I/O, no logging and no awaiting:
the service shell persists the state, creates tasks and sends notifications from the
transitions. ``now`` is the receiver's clock; a reading's own ``ts`` is the true time at
which its value was measured, so readings replayed after an outage open and close alerts at
their true times (and are marked ``late``).

Lifecycle per (site, device, rule): no alert -> pending (condition seen, waiting for
``for_min``) -> firing -> acknowledged -> resolved; a pending alert whose condition goes away
is cancelled without ever having fired. Only one alert is open per key. An open alert
resolves only when the value is back inside the rule's clear band (hysteresis), so a value
hovering at the limit does not flap.

For speed the state is updated in place and returned; replaying the same events from a
copy of the same state gives the same transitions.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from enum import StrEnum
from typing import Any, Final

from weijian.contract import AlertState, Flag, GatewayState, GatewayStatus, Kind, Reading
from weijian.rules import Grade, Rule, RuleType, Severity

__all__ = [
    "GATEWAY_OFFLINE_RULE",
    "Acknowledge",
    "AddSilence",
    "Alert",
    "DeviceInfo",
    "EngineConfig",
    "EngineState",
    "Event",
    "Silence",
    "Tick",
    "Transition",
    "TransitionKind",
    "alert_key",
    "restore",
    "snapshot",
    "step",
]

_FAULT_FLAGS: Final = frozenset({Flag.DEVICE_FAULT, Flag.COMM_FAILURE})
# Enum members as module constants: the per-reading loop compares against them many times.
_NORMAL: Final = Flag.NORMAL
_COMM_FAILURE: Final = Flag.COMM_FAILURE
_RANGE: Final = RuleType.RANGE
_DATA_INTERRUPTION: Final = RuleType.DATA_INTERRUPTION
_DEVICE_FAULT: Final = RuleType.DEVICE_FAULT

# The alert a gateway going offline raises instead of one data interruption per device
# (inhibition, as Alertmanager's inhibit rules do).
GATEWAY_OFFLINE_RULE: Final = Rule(
    id="gateway-offline",
    type=RuleType.DATA_INTERRUPTION,
    title="监测网关离线",
    silent_min=1,
    severity=Severity.WARNING,
    standard="HJ 212-2017",
    clause="数采仪与上位机通讯状态（i22003）",
    grade=Grade.A,
)


class TransitionKind(StrEnum):
    """What happened to an alert."""

    PENDING = "pending"  # condition seen, waiting for the rule's duration
    CANCELLED = "cancelled"  # a pending alert whose condition went away; never fired
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    REPEAT = "repeat"  # still firing, unacknowledged: notify again
    ESCALATED = "escalated"  # unacknowledged too long: notify the next level

    @property
    def state(self) -> AlertState | None:
        """The contract state this transition moves the alert into (None: no state change)."""
        return _STATE.get(self)


_STATE: Final = {
    TransitionKind.PENDING: AlertState.PENDING,
    TransitionKind.FIRING: AlertState.FIRING,
    TransitionKind.ACKNOWLEDGED: AlertState.ACKNOWLEDGED,
    TransitionKind.RESOLVED: AlertState.RESOLVED,
    TransitionKind.CANCELLED: AlertState.RESOLVED,
}


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the engine knows of a registered device."""

    site_id: str
    device_id: str
    kind: Kind
    district: str
    gateway_id: str | None
    rules: tuple[Rule, ...]
    counts_days: bool = field(init=False, default=False)  # a completeness rule counts its readings
    reading_rules: tuple[Rule, ...] = field(init=False, default=())  # judged per reading (not per day)

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts_days", any(r.type is RuleType.COMPLETENESS for r in self.rules))
        object.__setattr__(self, "reading_rules",
                           tuple(r for r in self.rules if r.type is not RuleType.COMPLETENESS))


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the engine judges by; built from the registry and the rule packs.

    Attributes:
        devices: every registered device, by ``(site_id, device_id)``.
        late_after: a reading older than this on arrival is late.
        repeat_interval: how often an unacknowledged firing alert is notified again.
        escalate_after: delays after firing at which levels 2, 3, ... are notified.
    """

    devices: Mapping[tuple[str, str], DeviceInfo]
    late_after: timedelta = timedelta(minutes=5)
    repeat_interval: timedelta = timedelta(hours=4)
    escalate_after: tuple[timedelta, ...] = (timedelta(minutes=30), timedelta(minutes=60))

    def gateway_devices(self, gateway_id: str) -> list[DeviceInfo]:
        """The devices a gateway serves, in registry order."""
        return [d for d in self.devices.values() if d.gateway_id == gateway_id]


@dataclass(frozen=True, slots=True)
class Silence:
    """A maintenance window: alerts of a site (or one device, or one rule) stay quiet.

    Attributes:
        id: the silence's id.
        site_id: the site.
        device_id: one device of it, or None for all.
        rule_id: one rule, or None for all.
        starts: beginning (true time).
        ends: end (true time).
        reason: why (calibration, cleaning ...).
        created_by: who set it.
    """

    id: str
    site_id: str
    starts: datetime
    ends: datetime
    reason: str
    created_by: str
    device_id: str | None = None
    rule_id: str | None = None

    def mutes(self, site_id: str, device_id: str, rule_id: str, at: datetime) -> bool:
        """Whether this silence covers an alert of that key at ``at``."""
        return (
            self.site_id == site_id
            and (self.device_id is None or self.device_id == device_id)
            and (self.rule_id is None or self.rule_id == rule_id)
            and self.starts <= at < self.ends
        )


@dataclass(slots=True)
class Alert:
    """One alert, open or just closed.

    Attributes:
        alert_id: stable id derived from the key and the moment the condition began.
        site_id: the site.
        device_id: the device (the gateway id for a gateway-offline alert).
        rule_id: the rule.
        kind: the site's kind.
        district: the site's district.
        severity: the rule's severity.
        state: lifecycle state.
        since: true time the condition began.
        fired_at: true time it fired.
        notified_at: receiver time of the last notification (first, repeat or escalation).
        opened_at: receiver time it fired, moved on by the time it was muted (a silence, or an
            inhibition) while firing: escalation counts from here.
        resolved_at: true time it resolved.
        acked_at: receiver time it was acknowledged.
        acked_by: who acknowledged it.
        value: the worst value seen while open.
        threshold: the limit breached.
        level: escalation level reached (1 handler, 2 head, 3 district supervisors).
        late: raised from late (replayed) data.
        silenced: a silence covered it when it fired.
        inhibited: folded into a gateway-offline alert.
    """

    alert_id: str
    site_id: str
    device_id: str
    rule_id: str
    kind: Kind
    district: str
    severity: Severity
    state: AlertState
    since: datetime
    fired_at: datetime | None = None
    notified_at: datetime | None = None
    opened_at: datetime | None = None
    resolved_at: datetime | None = None
    acked_at: datetime | None = None
    acked_by: str | None = None
    value: float | None = None
    threshold: float | None = None
    level: int = 0
    late: bool = False
    silenced: bool = False
    inhibited: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        """``(site_id, device_id, rule_id)``."""
        return (self.site_id, self.device_id, self.rule_id)


@dataclass(frozen=True, slots=True)
class Transition:
    """One change to an alert: the alert as it is after the change.

    Attributes:
        kind: what happened.
        alert: a snapshot of the alert after the change.
        at: the true time of the change (a reading's ts, or the receiver's clock).
        late: caused by a late reading.
    """

    kind: TransitionKind
    alert: Alert
    at: datetime
    late: bool = False


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock moved: check silences, repeats, escalations and data interruptions."""


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """Someone took charge of an alert (claimed its task, or acknowledged it directly)."""

    alert_id: str
    by: str


@dataclass(frozen=True, slots=True)
class AddSilence:
    """Start a maintenance window."""

    silence: Silence


Event = Reading | GatewayStatus | Tick | Acknowledge | AddSilence


@dataclass(slots=True)
class EngineState:
    """What the engine remembers between events.

    Attributes:
        config: devices, rules and timing policy (shared, never changed by a step).
        alerts: open alerts (pending, firing, acknowledged) by key.
        last_seen: true time of the newest reading with data, per device.
        rate_ref: the reference point of each rate-of-change rule.
        last_empty: when each not-emptied rule last saw the store near empty.
        offline: gateways offline, with the time they went.
        back_online: when each gateway last came back (data-interruption grace).
        silences: maintenance windows not yet ended (ended ones leave at the next tick; the
            store keeps every one as the record).
        started: the receiver time of the first tick, the watch's beginning.
        outside: cumulative rules: spans of time outside the limits within the window, and
            since when the last reading has been outside (None: it was inside).
        day_counts: completeness rules: readings with data per device per local (UTC+8) day.
        judged_day: completeness rules: the last local day judged, per device and rule.
        muted_since: when a silence or an inhibition began muting each firing alert, by key:
            escalation does not count that time once the alert speaks again.
    """

    config: EngineConfig
    alerts: dict[tuple[str, str, str], Alert] = field(default_factory=dict)
    last_seen: dict[tuple[str, str], datetime] = field(default_factory=dict)
    rate_ref: dict[tuple[str, str, str], tuple[datetime, float]] = field(default_factory=dict)
    last_empty: dict[tuple[str, str, str], datetime] = field(default_factory=dict)
    offline: dict[str, datetime] = field(default_factory=dict)
    back_online: dict[str, datetime] = field(default_factory=dict)
    silences: list[Silence] = field(default_factory=list)
    started: datetime | None = None
    outside: dict[tuple[str, str, str], tuple[list[tuple[datetime, datetime]], datetime | None]] = field(
        default_factory=dict
    )
    day_counts: dict[tuple[str, str], dict[date, int]] = field(default_factory=dict)
    judged_day: dict[tuple[str, str, str], date] = field(default_factory=dict)
    muted_since: dict[tuple[str, str, str], datetime] = field(default_factory=dict)

    def copy(self) -> EngineState:
        """A deep copy, for replaying."""
        return copy.deepcopy(self, {id(self.config): self.config})

    def find(self, alert_id: str) -> Alert | None:
        """The open alert with that id, or None."""
        return next((a for a in self.alerts.values() if a.alert_id == alert_id), None)


def alert_key(site_id: str, device_id: str, rule_id: str, since: datetime) -> str:
    """A stable alert id: the same condition beginning at the same time has the same id."""
    raw = f"{site_id}/{device_id}/{rule_id}/{since.isoformat()}".encode()
    return hashlib.sha256(raw).hexdigest()[:20]


class _Step:
    """One call of :func:`step`: the config, the state, the clock and the output list."""

    __slots__ = ("config", "now", "out", "state")

    def __init__(self, config: EngineConfig, state: EngineState, now: datetime) -> None:
        self.config = config
        self.state = state
        self.now = now
        self.out: list[Transition] = []

    def emit(self, kind: TransitionKind, alert: Alert, at: datetime, late: bool = False) -> None:
        self.out.append(Transition(kind, replace(alert), at, late))

    def muted(self, site_id: str, device_id: str, rule_id: str, at: datetime) -> bool:
        return any(s.mutes(site_id, device_id, rule_id, at) for s in self.state.silences)

    # --- the shared state machine --------------------------------------------------------

    def judge(
        self,
        dev: DeviceInfo,
        rule: Rule,
        *,
        bad: bool,
        clear: bool,
        at: datetime,
        value: float | None,
        late: bool,
        since: datetime | None = None,
        hold: timedelta | None = None,
        threshold: float | None = None,
    ) -> None:
        """Advance one (device, rule) alert given whether its condition holds at ``at``.

        ``threshold`` is the limit actually crossed (a two-sided range rule's min or max); None
        takes the rule's own number (:attr:`Rule.limit`).
        """
        key = (dev.site_id, dev.device_id, rule.id)
        alert = self.state.alerts.get(key)
        if alert is None and not bad:
            return  # the common case: nothing open, nothing wrong
        if bad:
            hold = timedelta(minutes=rule.for_min) if hold is None else hold
            if alert is None:
                began = since or at
                alert = Alert(
                    alert_id=alert_key(dev.site_id, dev.device_id, rule.id, began),
                    site_id=dev.site_id,
                    device_id=dev.device_id,
                    rule_id=rule.id,
                    kind=dev.kind,
                    district=dev.district,
                    severity=rule.severity,
                    state=AlertState.PENDING,
                    since=began,
                    value=value,
                    threshold=rule.limit if threshold is None else threshold,
                )
                self.state.alerts[key] = alert
                self.emit(TransitionKind.PENDING, alert, at, late)
            elif value is not None and alert.value is not None:
                alert.value = _worse(rule, alert.value, value)
            if alert.state is AlertState.PENDING and at - alert.since >= hold:
                self.fire(alert, at, late)
        elif alert is not None and alert.state is AlertState.PENDING:
            del self.state.alerts[key]
            alert.state = AlertState.RESOLVED
            alert.resolved_at = at
            self.emit(TransitionKind.CANCELLED, alert, at, late)
        elif alert is not None and clear:
            self.resolve(alert, at, late)

    def fire(self, alert: Alert, at: datetime, late: bool) -> None:
        alert.state = AlertState.FIRING
        alert.fired_at = at
        alert.opened_at = self.now
        alert.notified_at = self.now
        alert.level = 1
        alert.late = late
        alert.silenced = self.muted(alert.site_id, alert.device_id, alert.rule_id, at)
        if alert.silenced:
            self.state.muted_since[alert.key] = self.now
        self.emit(TransitionKind.FIRING, alert, at, late)

    def resolve(self, alert: Alert, at: datetime, late: bool) -> None:
        del self.state.alerts[alert.key]
        self.state.muted_since.pop(alert.key, None)
        alert.state = AlertState.RESOLVED
        alert.resolved_at = at
        self.emit(TransitionKind.RESOLVED, alert, at, late)

    # --- events ---------------------------------------------------------------------------

    def reading(self, reading: Reading) -> None:
        dev = self.config.devices.get((reading.site_id, reading.device_id))
        if dev is None:
            return  # ingest rejects unregistered devices; nothing to judge here
        where = (dev.site_id, dev.device_id)
        ts = reading.ts
        seen = self.state.last_seen.get(where)
        if seen is not None and ts <= seen:
            return  # a duplicate or out-of-order copy: already judged
        late = reading.resent or self.now - ts > self.config.late_after
        metrics = reading.metrics
        has_data = False
        for m in metrics.values():
            if m.flag is not _COMM_FAILURE:
                has_data = True
                break
        if has_data:
            self.state.last_seen[where] = ts
            if dev.counts_days:
                days = self.state.day_counts.setdefault(where, {})
                day = _local_day(ts)
                days[day] = days.get(day, 0) + 1
        alerts = self.state.alerts
        faulty: bool | None = None  # any metric flagged D or B (worked out when first needed)
        for rule in dev.reading_rules:
            kind = rule.type
            if kind is _DATA_INTERRUPTION:
                if (dev.site_id, dev.device_id, rule.id) not in alerts:
                    continue  # a reading only ever resolves an open interruption
            elif kind is _DEVICE_FAULT:
                if faulty is None:
                    faulty = any(m.flag in _FAULT_FLAGS for m in metrics.values())
                if not faulty and (dev.site_id, dev.device_id, rule.id) not in alerts:
                    continue
            elif kind in _STATE_BAD:
                # Another hot path: a 0/1 state (door, mains, equipment) that is fine, nothing open.
                state = metrics.get(_METRIC.get(kind) or rule.metric)  # type: ignore[arg-type]
                if state is None or state.flag is not _NORMAL or state.value is None:
                    continue
                if (state.value >= 0.5) is not _STATE_BAD[kind] and (
                    (dev.site_id, dev.device_id, rule.id) not in alerts
                ):
                    continue
            elif kind is _RANGE:
                # The hot path, inlined: a normal value inside the band with no alert open.
                metric = metrics.get(rule.metric)  # type: ignore[arg-type]
                if metric is None or metric.flag is not _NORMAL or metric.value is None:
                    continue  # threshold rules judge only N values (HJ 212-2017 Table 8)
                v, lo, hi = metric.value, rule.min, rule.max
                # Strictly inside both limits complies whatever their wording; a value exactly
                # on a limit goes the long way (Rule.too_low / too_high).
                if (lo is None or v > lo) and (hi is None or v < hi) and (
                    (dev.site_id, dev.device_id, rule.id) not in alerts
                ):
                    continue
            self.apply_rule(dev, rule, reading, late, has_data)

    def apply_rule(self, dev: DeviceInfo, rule: Rule, reading: Reading, late: bool, has_data: bool) -> None:
        ts = reading.ts
        kind = rule.type
        if kind is _DATA_INTERRUPTION:
            alert = self.state.alerts.get((dev.site_id, dev.device_id, rule.id))
            if alert is not None and has_data:
                self.resolve(alert, ts, late)
            return
        if kind is _DEVICE_FAULT:
            judged = faulty = False
            for name, m in reading.metrics.items():
                if rule.metric is None or rule.metric == name:
                    judged = True
                    if m.flag in _FAULT_FLAGS:
                        faulty = True
                        break
            if judged:
                self.judge(dev, rule, bad=faulty, clear=not faulty, at=ts, value=None, late=late)
            return
        metric = reading.metrics.get(_METRIC.get(kind, rule.metric or ""))
        if metric is None or metric.flag is not _NORMAL or metric.value is None:
            return  # threshold rules judge only N values (HJ 212-2017 Table 8)
        v = metric.value
        if kind is _RANGE:
            crossed = rule.crossed(v)
            bad = crossed is not None
            lo, hi = rule.clear_low, rule.clear_high
            clear = not bad and (lo is None or v >= lo) and (hi is None or v <= hi)
            self.judge(dev, rule, bad=bad, clear=clear, at=ts, value=v, late=late, threshold=crossed)
        elif kind is RuleType.DOOR_OPEN:
            self.judge(dev, rule, bad=v >= 0.5, clear=v < 0.5, at=ts, value=v, late=late)
        elif kind is RuleType.POWER_LOST or kind is RuleType.EQUIPMENT_OFF:
            self.judge(dev, rule, bad=v < 0.5, clear=v >= 0.5, at=ts, value=v, late=late)
        elif kind is RuleType.CUMULATIVE:
            self.cumulative(dev, rule, ts, v, late)
        elif kind is RuleType.RATE_OF_CHANGE:
            key = (dev.site_id, dev.device_id, rule.id)
            ref = self.state.rate_ref.get(key)
            if ref is None or ts - ref[0] >= timedelta(minutes=rule.per_min * 2):
                self.state.rate_ref[key] = (ts, v)  # first point, or the window went stale
                return
            if ts - ref[0] < timedelta(minutes=rule.per_min):
                return
            assert rule.max_change is not None  # checked by the schema
            change = abs(v - ref[1])
            self.state.rate_ref[key] = (ts, v)
            bad = change > rule.max_change
            self.judge(dev, rule, bad=bad, clear=not bad, at=ts, value=change, late=late)
        elif kind is RuleType.NOT_EMPTIED:
            assert rule.near_empty_kg is not None and rule.window_h is not None
            key = (dev.site_id, dev.device_id, rule.id)
            if v <= rule.near_empty_kg:
                self.state.last_empty[key] = ts
                self.judge(dev, rule, bad=False, clear=True, at=ts, value=v, late=late)
                return
            open_alert = self.state.alerts.get(key)
            since = self.state.last_empty.setdefault(key, open_alert.since if open_alert else ts)
            self.judge(
                dev, rule, bad=True, clear=False, at=ts, value=v, late=late,
                since=since, hold=timedelta(hours=rule.window_h),
            )

    def cumulative(self, dev: DeviceInfo, rule: Rule, ts: datetime, v: float, late: bool) -> None:
        """Add up the time outside the limits over the trailing ``window_h``; fire at ``total_min``.

        The time from a reading outside the limits to the next reading counts as outside (at
        most ``_CUMULATIVE_MAX_STEP`` of it: a gap in the data is not an excursion).
        """
        assert rule.window_h is not None and rule.total_min is not None
        key = (dev.site_id, dev.device_id, rule.id)
        entry = self.state.outside.get(key)
        crossed = rule.crossed(v)
        if entry is None and crossed is None and key not in self.state.alerts:
            return  # the hot path: nothing outside in the window, nothing now, nothing open
        spans, since = entry or ([], None)
        if since is not None and ts > since:
            end = min(ts, since + _CUMULATIVE_MAX_STEP)
            if spans and spans[-1][1] >= since:
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            else:
                spans.append((since, end))
        window_start = ts - timedelta(hours=rule.window_h)
        spans = [(max(a, window_start), b) for a, b in spans if b > window_start]
        if spans or crossed is not None:
            self.state.outside[key] = (spans, ts if crossed is not None else None)
        else:
            self.state.outside.pop(key, None)  # nothing left to count: as if never outside
        minutes = _total(spans) / timedelta(minutes=1)
        bad = minutes >= rule.total_min
        if not bad and key not in self.state.alerts:
            return
        self.judge(dev, rule, bad=bad, clear=not bad, at=ts, value=round(minutes, 1), late=late,
                   hold=timedelta(0), threshold=rule.total_min)

    def completeness(self, now: datetime) -> None:
        """Judge every whole local day that has ended (and its late grace passed) per device."""
        started = self.state.started
        assert started is not None
        last_whole = _local_day(now - self.config.late_after) - timedelta(days=1)
        for dev in self.config.devices.values():
            if not dev.counts_days:
                continue
            days = self.state.day_counts.get((dev.site_id, dev.device_id), {})
            for rule in dev.rules:
                if rule.type is not RuleType.COMPLETENESS:
                    continue
                assert rule.expected_interval_min is not None and rule.min_share is not None
                key = (dev.site_id, dev.device_id, rule.id)
                # The first day judged is the first whole day after the watch began.
                day = self.state.judged_day.get(key, _local_day(started)) + timedelta(days=1)
                while day <= last_whole:
                    share = days.get(day, 0) / (1440 / rule.expected_interval_min)
                    bad = share < rule.min_share
                    begin = datetime.combine(day, time(), _LOCAL_TZ).astimezone(UTC)
                    end = begin + timedelta(days=1)
                    self.judge(dev, rule, bad=bad, clear=not bad, at=end,
                               value=round(min(share, 1.0) * 100, 1), late=False, since=begin,
                               hold=timedelta(0), threshold=rule.min_share * 100)
                    self.state.judged_day[key] = day
                    day += timedelta(days=1)
            for old in [d for d in days if d <= last_whole]:
                del days[old]

    def gateway(self, status: GatewayStatus) -> None:
        gw = status.gateway_id
        devices = self.config.gateway_devices(gw)
        if not devices:
            return
        first = devices[0]
        key = (first.site_id, gw, GATEWAY_OFFLINE_RULE.id)
        alert = self.state.alerts.get(key)
        if status.state is GatewayState.OFFLINE:
            if gw in self.state.offline:
                return
            self.state.offline[gw] = status.ts
            anchor = DeviceInfo(first.site_id, gw, first.kind, first.district, gw, ())
            self.judge(anchor, GATEWAY_OFFLINE_RULE, bad=True, clear=False, at=status.ts,
                       value=None, late=False, hold=timedelta(0))
            for dev in devices:  # fold the devices' interruptions into the gateway's alert
                for a in self.state.alerts.values():
                    if (a.site_id, a.device_id) == (dev.site_id, dev.device_id) and _is_interruption(dev, a):
                        a.inhibited = True
                        self.state.muted_since.setdefault(a.key, self.now)
        else:
            if self.state.offline.pop(gw, None) is None and alert is None:
                return
            self.state.back_online[gw] = status.ts
            if alert is not None:
                self.resolve(alert, status.ts, False)

    def tick(self) -> None:
        now = self.now
        # Ended silences leave the working list (the store keeps them as the record).
        if any(s.ends <= now for s in self.state.silences):
            self.state.silences = [s for s in self.state.silences if s.ends > now]
        if self.state.started is None:
            self.state.started = now
        started = self.state.started
        self.completeness(now)
        for dev in self.config.devices.values():
            for rule in dev.rules:
                if rule.type is not RuleType.DATA_INTERRUPTION or rule.silent_min is None:
                    continue
                key = (dev.site_id, dev.device_id, rule.id)
                if key in self.state.alerts:
                    continue
                refs = [self.state.last_seen.get((dev.site_id, dev.device_id)), started]
                if dev.gateway_id is not None:
                    refs.append(self.state.back_online.get(dev.gateway_id))
                ref = max(r for r in refs if r is not None)
                silent = timedelta(minutes=rule.silent_min)
                if now - ref < silent:
                    continue
                if dev.gateway_id in self.state.offline:
                    continue  # inhibited: the gateway-offline alert speaks for it
                self.judge(dev, rule, bad=True, clear=False, at=ref + silent, value=None,
                           late=False, since=ref, hold=silent)
        for alert in list(self.state.alerts.values()):
            if alert.state is not AlertState.FIRING:
                continue
            if alert.inhibited and self.inhibits(alert):
                continue  # the gateway-offline alert (or the device's grace after it) speaks for it
            if self.muted(alert.site_id, alert.device_id, alert.rule_id, now):
                if not alert.silenced:
                    # A silence made after the alert fired mutes what is still to be sent
                    # (repeats, escalations), as Alertmanager decides at notification time.
                    alert.silenced = True
                    self.state.muted_since.setdefault(alert.key, now)
                continue
            assert alert.opened_at is not None and alert.notified_at is not None
            if alert.silenced or alert.inhibited:
                # The window ended, or the gateway is back and the device still silent after its
                # grace, with the alert still firing: notify it again at once, and let escalation
                # go on where it stopped (the muted time does not count, so it does not jump).
                alert.silenced = alert.inhibited = False
                alert.opened_at += now - self.state.muted_since.pop(alert.key, alert.opened_at)
                alert.notified_at = now
                self.emit(TransitionKind.REPEAT, alert, now)
                continue
            escalations = self.config.escalate_after
            due_level = 1 + sum(1 for d in escalations if now - alert.opened_at >= d)
            if due_level > alert.level:
                alert.level = due_level
                alert.notified_at = now
                self.emit(TransitionKind.ESCALATED, alert, now)
            elif now - alert.notified_at >= self.config.repeat_interval:
                alert.notified_at = now
                self.emit(TransitionKind.REPEAT, alert, now)

    def inhibits(self, alert: Alert) -> bool:
        """Whether an inhibited interruption is still spoken for by its gateway's alert.

        It is while the gateway is offline and, once it is back, for the rule's ``silent_min``:
        the grace each device has to report again (a reading resolves the alert meanwhile).
        """
        dev = self.config.devices.get((alert.site_id, alert.device_id))
        if dev is None or dev.gateway_id is None:
            return False
        if dev.gateway_id in self.state.offline:
            return True
        back = self.state.back_online.get(dev.gateway_id)
        rule = next((r for r in dev.rules if r.id == alert.rule_id), None)
        if back is None or rule is None or rule.silent_min is None:
            return False
        return self.now - back < timedelta(minutes=rule.silent_min)

    def acknowledge(self, ack: Acknowledge) -> None:
        alert = self.state.find(ack.alert_id)
        if alert is None or alert.state is not AlertState.FIRING:
            return
        alert.state = AlertState.ACKNOWLEDGED
        alert.acked_at = self.now
        alert.acked_by = ack.by
        self.emit(TransitionKind.ACKNOWLEDGED, alert, self.now)


_METRIC: Final = {RuleType.DOOR_OPEN: "door_open", RuleType.POWER_LOST: "power_ok"}
_CUMULATIVE_MAX_STEP: Final = timedelta(minutes=30)
# 0/1 state rules: whether a value of 1 (>= 0.5) is the bad state.
_STATE_BAD: Final = {RuleType.DOOR_OPEN: True, RuleType.POWER_LOST: False, RuleType.EQUIPMENT_OFF: False}
_EIGHT_HOURS: Final = timedelta(hours=8)
_LOCAL_TZ: Final = timezone(timedelta(hours=8))  # days of a completeness rule are China's days


def _total(spans: list[tuple[datetime, datetime]]) -> timedelta:
    return sum((b - a for a, b in spans), timedelta())


def _local_day(at: datetime) -> date:
    offset = at.utcoffset()
    if not offset:  # UTC (the usual case): no time-zone conversion needed
        return (at + _EIGHT_HOURS).date()
    return at.astimezone(_LOCAL_TZ).date()


def _worse(rule: Rule, old: float, new: float) -> float:
    """The value further from the limit: the lowest for a lower limit, else the highest."""
    if rule.type is RuleType.RANGE and rule.too_low(old):
        return min(old, new)
    return max(old, new)


def _is_interruption(dev: DeviceInfo, alert: Alert) -> bool:
    return any(r.id == alert.rule_id and r.type is RuleType.DATA_INTERRUPTION for r in dev.rules)


def step(state: EngineState, event: Event, now: datetime) -> tuple[EngineState, Sequence[Transition]]:
    """Apply one event.

    Args:
        state: the engine state (updated in place and returned).
        event: a reading, a gateway status, a tick, an acknowledgement or a silence.
        now: the receiver's clock (timezone-aware).

    Returns:
        The state and the transitions, in the order they happened.
    """
    run = _Step(state.config, state, now)
    if isinstance(event, Reading):
        run.reading(event)
    elif isinstance(event, GatewayStatus):
        run.gateway(event)
    elif isinstance(event, Tick):
        run.tick()
    elif isinstance(event, Acknowledge):
        run.acknowledge(event)
    else:
        state.silences.append(event.silence)
    return state, run.out


# --- what survives a takeover ---------------------------------------------------------------
# Times as whole microseconds since the epoch: exact, so a redelivered reading compares equal
# to the last one judged (``ts <= last_seen``) and is not judged twice.
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)


def _us(at: datetime) -> int:
    return (at - _EPOCH) // _US


def _at(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def snapshot(state: EngineState) -> dict[str, Any]:
    """The in-memory part of ``state`` that open alerts do not carry, as JSON-ready data.

    Open alerts are rows of their own; silences are recorded where they are made. What is
    left (last data time per device, rate-of-change references, last-empty times, gateways
    offline and back online, the watch's start, since when firing alerts are muted) is what
    :func:`restore` needs so that pending durations, hysteresis, no-data timers and
    escalation go on across a takeover.
    """
    return {
        "v": 1,
        "last_seen": [[s, d, _us(t)] for (s, d), t in state.last_seen.items()],
        "rate_ref": [[s, d, r, _us(t), v] for (s, d, r), (t, v) in state.rate_ref.items()],
        "last_empty": [[s, d, r, _us(t)] for (s, d, r), t in state.last_empty.items()],
        "offline": {g: _us(t) for g, t in state.offline.items()},
        "back_online": {g: _us(t) for g, t in state.back_online.items()},
        "started": None if state.started is None else _us(state.started),
        "outside": [[s, d, r, [[_us(a), _us(b)] for a, b in spans], None if since is None else _us(since)]
                    for (s, d, r), (spans, since) in state.outside.items()],
        "day_counts": [[s, d, day.isoformat(), n] for (s, d), days in state.day_counts.items()
                       for day, n in days.items()],
        "judged_day": [[s, d, r, day.isoformat()] for (s, d, r), day in state.judged_day.items()],
        "muted_since": [[s, d, r, _us(t)] for (s, d, r), t in state.muted_since.items()],
    }


def restore(state: EngineState, data: Mapping[str, Any]) -> None:
    """Merge a :func:`snapshot` into ``state``, for the devices and gateways ``state`` judges.

    Several snapshots may be merged (the partitions were cut differently before): the newest
    time wins for each device, and the earliest start.
    """
    devices = state.config.devices
    gateways = {d.gateway_id for d in devices.values()}
    for s, d, t in data.get("last_seen", ()):
        if (s, d) in devices:
            at = _at(t)
            old = state.last_seen.get((s, d))
            if old is None or at > old:
                state.last_seen[(s, d)] = at
    for s, d, r, t, v in data.get("rate_ref", ()):
        if (s, d) in devices:
            old_ref = state.rate_ref.get((s, d, r))
            if old_ref is None or _at(t) > old_ref[0]:
                state.rate_ref[(s, d, r)] = (_at(t), float(v))
    for s, d, r, t in data.get("last_empty", ()):
        if (s, d) in devices:
            old = state.last_empty.get((s, d, r))
            if old is None or _at(t) > old:
                state.last_empty[(s, d, r)] = _at(t)
    for name in ("offline", "back_online"):
        target: dict[str, datetime] = getattr(state, name)
        for g, t in data.get(name, {}).items():
            if g in gateways and (g not in target or _at(t) > target[g]):
                target[g] = _at(t)
    for g in [g for g, went in state.offline.items() if state.back_online.get(g, went) > went]:
        del state.offline[g]  # merged rows: it came back after it went; the later event wins
    started = data.get("started")
    if started is not None and (state.started is None or _at(started) < state.started):
        state.started = _at(started)
    for s, d, r, spans, since in data.get("outside", ()):
        if (s, d) in devices:
            # Several snapshots (partitions cut differently before): the one with more time
            # outside counted is the later one.
            new_spans = [(_at(a), _at(b)) for a, b in spans]
            prior = state.outside.get((s, d, r))
            if prior is None or _total(new_spans) >= _total(prior[0]):
                state.outside[(s, d, r)] = (new_spans, None if since is None else _at(since))
    for s, d, day, n in data.get("day_counts", ()):
        if (s, d) in devices:
            days = state.day_counts.setdefault((s, d), {})
            days[date.fromisoformat(day)] = max(days.get(date.fromisoformat(day), 0), int(n))
    for s, d, r, day in data.get("judged_day", ()):
        if (s, d) in devices:
            judged = date.fromisoformat(day)
            if (s, d, r) not in state.judged_day or judged > state.judged_day[(s, d, r)]:
                state.judged_day[(s, d, r)] = judged
    for s, d, r, t in data.get("muted_since", ()):
        if (s, d) in devices or d in gateways:  # a gateway-offline alert's device is its gateway
            old = state.muted_since.get((s, d, r))
            if old is None or _at(t) > old:
                state.muted_since[(s, d, r)] = _at(t)
