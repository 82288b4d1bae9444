"""What each engine transition causes: alert event, inspection task and notifications.

Routing tree, escalation contacts and the Chinese templates live here. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from alerts.engine import GATEWAY_OFFLINE_RULE, Alert, Transition, TransitionKind
from alerts.store import NewTask, OutboxItem
from weijian.config import AlertRoute, AlertsSettings
from weijian.contract import CATALOGUE, AlertEvent
from weijian.registry import Registry
from weijian.rules import Rule, RuleType, Severity

__all__ = ["Dispatch", "Plan", "plan"]

_LOCAL = ZoneInfo("Asia/Shanghai")  # message times are read by people in China
_SEVERITY_ZH: Mapping[Severity, str] = {
    Severity.INFO: "提示", Severity.WARNING: "警告", Severity.CRITICAL: "严重",
}
_LEVEL_ZH = {1: "单位经办人", 2: "单位负责人", 3: "监督员"}


@dataclass(slots=True)
class Plan:
    """Everything a batch of transitions causes."""

    events: list[AlertEvent] = field(default_factory=list)
    tasks: list[NewTask] = field(default_factory=list)
    outbox: list[OutboxItem] = field(default_factory=list)
    audits: list[tuple[str, str, str, str]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Dispatch:
    """The context :func:`plan` needs: registry, rules by id, alerts settings."""

    registry: Registry
    rules: Mapping[str, Rule]
    settings: AlertsSettings

    def rule(self, rule_id: str) -> Rule:
        """The rule (the gateway-offline rule included)."""
        return self.rules.get(rule_id, GATEWAY_OFFLINE_RULE)


def _local(at: datetime) -> str:
    return at.astimezone(_LOCAL).strftime("%m月%d日%H:%M")


# How units read in Chinese text messages; the wire keeps the contract's ASCII spelling.
_DISPLAY_UNITS = {"degC": "℃", "uS/cm": "μS/cm", "pH": "", "0/1": ""}


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


_OUTSIDE = {"不低于": "低于", "高于": "不高于", "不高于": "高于", "低于": "不低于"}


def _measured(rule: Rule, a: Alert, unit: str) -> str:
    """``实测6.1，限值不低于6.5``: the value and the limit it crossed, each with its own unit."""
    if rule.type is RuleType.COMPLETENESS and a.value is not None:
        day = a.since.astimezone(_LOCAL).strftime("%m月%d日")
        return f"{day}数据完整率{_fmt(a.value)}%，限值不低于{_fmt(a.threshold)}%"
    if a.value is None or rule.metric is None:
        return ""
    if rule.type is RuleType.RANGE:
        return f"实测{_fmt(a.value)}{unit}，限值{rule.wording(a.threshold)}{_fmt(a.threshold)}{unit}"
    if rule.type is RuleType.NOT_EMPTIED:
        hours = (a.fired_at or a.since) - a.since
        return (f"已{_fmt(hours.total_seconds() / 3600)}小时未清空（当前{_fmt(a.value)}{unit}），"
                f"限值{_fmt(rule.window_h)}小时")
    if rule.type is RuleType.CUMULATIVE:
        limit = rule.max if rule.max is not None else rule.min
        # What counts as outside, worded as the opposite of the limit's compliance wording.
        outside = _OUTSIDE[rule.wording(limit)]
        return (f"{_fmt(rule.window_h)}小时内{outside}{_fmt(limit)}{unit}累计{_fmt(a.value)}分钟，"
                f"限值累计{_fmt(rule.total_min)}分钟")
    if rule.type is RuleType.RATE_OF_CHANGE:
        return (f"{_fmt(rule.per_min)}分钟内变化{_fmt(a.value)}{unit}，"
                f"限值{_fmt(rule.max_change)}{unit}")
    return ""


def describe(d: Dispatch, t: Transition) -> str:
    """The Chinese message of a transition (site, what, value, limit and its standard)."""
    a = t.alert
    site = d.registry.sites.get(a.site_id)
    name = site.name if site else a.site_id
    rule = d.rule(a.rule_id)
    unit = CATALOGUE[a.kind].get(rule.metric or "", "") if rule.metric else ""
    unit = _DISPLAY_UNITS.get(unit, unit)
    what = f"{name}（{a.device_id}）{rule.title}"
    measured = _measured(rule, a, unit)
    if t.kind is TransitionKind.RESOLVED:
        text = f"{what}已恢复正常（{_local(t.at)}）"
    elif measured:
        text = f"{what}：{measured}（{rule.citation}），发生于{_local(a.fired_at or t.at)}"
    else:
        text = f"{what}（{rule.citation}），发生于{_local(a.since)}"
    if a.late:
        text += "【补传数据：该告警由网络恢复后补传的数据产生，实际发生于" + _local(a.fired_at or t.at) + "】"
    return text


def _route(routes: list[AlertRoute], a: Alert) -> AlertRoute | None:
    for route in routes:
        if ((route.district is None or route.district == a.district)
                and (route.kind is None or route.kind == a.kind.value)
                and a.severity.rank >= route.min_severity.rank):
            return _route(route.routes, a) or route
    return None


def _contacts(d: Dispatch, a: Alert, level: int) -> list[str]:
    site = d.registry.sites.get(a.site_id)
    if site is None:
        return []
    unit = d.registry.units.get(site.unit)
    if level == 1 and unit:
        # The handler and the unit's designated alarm contacts (GSP 附录3: at least three people).
        return [unit.handler.phone, *(c.phone for c in unit.alarm_contacts)]
    if level == 2 and unit:
        return [unit.head.phone]
    district = d.registry.districts.get(a.district)
    return [c.phone for c in district.supervisors] if district else []


def _messages(d: Dispatch, t: Transition, text: str, level: int, reason: str) -> list[OutboxItem]:
    a = t.alert
    route = _route(d.settings.routes, a)
    if route is None:
        return []
    out = []
    phones = list(dict.fromkeys(_contacts(d, a, level) + (route.phones if level == 1 else [])))
    body = {
        "alert_id": a.alert_id, "site_id": a.site_id, "device_id": a.device_id, "rule": a.rule_id,
        "severity": a.severity.value, "state": a.state.value, "late": a.late, "level": level,
        "reason": reason, "at": t.at.isoformat(), "text": f"【卫监{_SEVERITY_ZH[a.severity]}】{text}",
    }
    stamp = int(t.at.timestamp())
    if "sms" in route.channels:
        for phone in phones:
            key = f"{a.alert_id}:{reason}:{level}:{stamp}:sms:{phone}"
            payload = {**body, "to": phone, "idempotency_key": key}
            out.append(OutboxItem(key, "sms", phone, payload, a.alert_id))
    for channel in ("wecom", "dingtalk"):
        if channel in route.channels:
            key = f"{a.alert_id}:{reason}:{level}:{stamp}:{channel}"
            out.append(OutboxItem(key, channel, channel, {**body, "idempotency_key": key}, a.alert_id))
    return out


def plan(d: Dispatch, transitions: list[Transition]) -> Plan:
    """Turn transitions into events, tasks, notifications and audit lines."""
    p = Plan()
    s = d.settings
    for t in transitions:
        a = t.alert
        p.alerts.append(a)
        state = t.kind.state
        visible = t.kind not in (TransitionKind.PENDING, TransitionKind.CANCELLED)
        if state is not None and visible:
            rule = d.rule(a.rule_id)
            p.events.append(AlertEvent(
                alert_id=a.alert_id, site_id=a.site_id, device_id=a.device_id, kind=a.kind,
                district=a.district, rule=a.rule_id, severity=a.severity.value, state=state,
                value=a.value, threshold=a.threshold if rule.metric else None,
                message=describe(d, t), ts=t.at, late=t.late,
            ))
        quiet = a.silenced or a.inhibited
        if t.kind is TransitionKind.FIRING and not quiet:
            text = describe(d, t)
            if a.severity.rank >= s.min_task_severity.rank:
                rule = d.rule(a.rule_id)
                site = d.registry.sites.get(a.site_id)
                p.tasks.append(NewTask(
                    alert_id=a.alert_id, district=a.district, site_id=a.site_id, device_id=a.device_id,
                    rule_id=a.rule_id, severity=a.severity.value,
                    title=f"巡查核查：{site.name if site else a.site_id}{rule.title}",
                    description=text + f"。依据：{rule.standard} {rule.clause}（可信度{rule.grade.value}）",
                    due_at=t.alert.opened_at + timedelta(hours=s.sla_h.get(a.severity, 24.0))
                    if t.alert.opened_at else t.at,
                ))
            p.outbox += _messages(d, t, text, 1, "firing")
        elif t.kind in (TransitionKind.REPEAT, TransitionKind.ESCALATED) and not quiet:
            p.outbox += _messages(d, t, describe(d, t), a.level, t.kind.value)
        elif t.kind is TransitionKind.RESOLVED:
            p.audits.append((a.alert_id, "system", "alert_resolved", describe(d, t)))
            if s.notify_resolved and not quiet:
                p.outbox += _messages(d, t, describe(d, t), 1, "resolved")
        elif t.kind is TransitionKind.ACKNOWLEDGED:
            p.audits.append((a.alert_id, a.acked_by or "?", "alert_acknowledged", ""))
        if t.kind is TransitionKind.ESCALATED and not quiet:
            who = _LEVEL_ZH.get(a.level, "")
            p.audits.append((a.alert_id, "system", "alert_escalated", f"level {a.level} {who}"))
    p.outbox = group_messages(d, p.outbox)
    return p


_REASON_ZH = {"repeat": "（重复提醒）", "escalated": "（升级通知）", "resolved": "已恢复正常"}


def group_messages(d: Dispatch, items: list[OutboxItem]) -> list[OutboxItem]:
    """One message per recipient for what fired together: same site, rule, reason and level.

    A gateway's power cut behind eight fridges is one cause; its eight alerts reach each
    recipient as one message that names the eight devices (as Alertmanager groups by labels).
    The message carries every alert id (``alert_ids``) so the delivery log accounts for each.
    """
    groups: dict[tuple[str, ...], list[OutboxItem]] = {}
    for item in items:
        b = item.payload
        group = (item.channel, item.recipient, str(b["site_id"]), str(b["rule"]), str(b["reason"]),
                 str(b["level"]))
        groups.setdefault(group, []).append(item)
    out = []
    for (channel, recipient, site_id, rule_id, reason, level), members in groups.items():
        if len(members) == 1:
            out.append(members[0])
            continue
        first = members[0].payload
        devices = sorted({str(m.payload["device_id"]) for m in members})
        alert_ids = [m.alert_id for m in members if m.alert_id]
        site = d.registry.sites.get(site_id)
        rule = d.rule(rule_id)
        at = datetime.fromisoformat(str(first["at"]))
        severity = Severity(str(first["severity"]))
        text = (f"【卫监{_SEVERITY_ZH[severity]}】{site.name if site else site_id}{rule.title}"
                f"{_REASON_ZH.get(reason, '')}：共{len(devices)}台设备（{'、'.join(devices)}）"
                f"（{rule.citation}），发生于{_local(at)}")
        digest = hashlib.sha256("|".join(sorted(m.idem_key for m in members)).encode()).hexdigest()[:20]
        idem = f"group:{digest}:{reason}:{level}:{channel}" + (f":{recipient}" if channel == "sms" else "")
        payload = {**first, "text": text, "devices": devices, "alert_ids": alert_ids, "idempotency_key": idem}
        out.append(OutboxItem(idem, channel, recipient, payload, members[0].alert_id))
    return out
