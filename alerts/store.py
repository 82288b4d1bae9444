"""The alerts database (SQLAlchemy 2 Core over ``[tasks] url``).

It holds alerts, inspection tasks and their audit trail, silences, and the notification
outbox that doubles as the delivery log.

SQLite is the embedded default, PostgreSQL is chosen by URL. Every method is synchronous and
short; the async service calls them through one worker thread. The engine's transitions, the
tasks they create and the notifications they queue are written in one transaction, so a
crash cannot fire an alert without its task and messages, or send a message twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from alerts.engine import Alert, Silence
from weijian.contract import AlertState, Kind
from weijian.errors import WeijianError
from weijian.rules import Severity

__all__ = [
    "DeliveryStatus",
    "NewTask",
    "OutboxItem",
    "Store",
    "StoreUnavailable",
    "TaskStatus",
    "engine_url",
]

log = logging.getLogger(__name__)


class StoreUnavailable(WeijianError):
    """The alerts database could not be reached or refused a statement."""


class TaskStatus(StrEnum):
    """Lifecycle of an inspection task (巡查核查任务)."""

    OPEN = "open"  # in the district's queue, nobody has it
    CLAIMED = "claimed"  # an inspector took it
    RESOLVED = "resolved"  # the inspector reports the cause removed, pending the finding
    CLOSED = "closed"  # closed with a finding (处置闭环)


class DeliveryStatus(StrEnum):
    """Where a queued notification stands."""

    PENDING = "pending"  # not yet delivered; ``next_attempt_at`` says when it is tried
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up (permanent error or attempts exhausted)


metadata = MetaData()

_ts = DateTime(timezone=True)

alerts_table = Table(
    "alerts_alerts", metadata,
    Column("alert_id", String(40), primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("district", String(64), nullable=False, index=True),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("since", _ts, nullable=False),
    Column("fired_at", _ts), Column("notified_at", _ts), Column("opened_at", _ts),
    Column("resolved_at", _ts), Column("acked_at", _ts), Column("acked_by", String(128)),
    Column("value", Float), Column("threshold", Float),
    Column("level", Integer, nullable=False, default=0),
    Column("late", Boolean, nullable=False, default=False),
    Column("silenced", Boolean, nullable=False, default=False),
    Column("inhibited", Boolean, nullable=False, default=False),
)

tasks_table = Table(
    "alerts_tasks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(40), nullable=False, unique=True),
    Column("district", String(64), nullable=False, index=True),
    Column("site_id", String(64), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("assignee", String(128)),
    Column("created_at", _ts, nullable=False),
    Column("due_at", _ts, nullable=False),
    Column("claimed_at", _ts), Column("closed_at", _ts),
    Column("alert_resolved_at", _ts),
    Column("finding", Text),
    Column("evidence", Text),  # JSON: photos (references), gps, time on site
    Column("escalated_at", _ts),
)

audit_table = Table(
    "alerts_task_audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("alerts_tasks.id"), nullable=False, index=True),
    Column("at", _ts, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("detail", Text, nullable=False, default=""),
)

silences_table = Table(
    "alerts_silences", metadata,
    Column("id", String(40), primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("device_id", String(64)), Column("rule_id", String(64)),
    Column("starts", _ts, nullable=False), Column("ends", _ts, nullable=False),
    Column("reason", Text, nullable=False), Column("created_by", String(128), nullable=False),
)

outbox_table = Table(
    "alerts_outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idem_key", String(80), nullable=False, unique=True),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(64), nullable=False, index=True),
    Column("alert_id", String(40)),
    Column("task_id", Integer),
    Column("payload", Text, nullable=False),
    Column("created_at", _ts, nullable=False),
    Column("next_attempt_at", _ts, nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False, index=True),
    Column("last_error", Text),
    Column("delivered_at", _ts),
)


def engine_url(url: str) -> str:
    """Map a ``[tasks] url`` to a SQLAlchemy URL (``postgresql://`` uses psycopg 3)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A notification to send.

    Attributes:
        idem_key: idempotency key, unique; the receiver drops a repeat.
        channel: ``sms``, ``wecom`` or ``dingtalk``.
        recipient: a phone number, or the channel name for group robots.
        payload: the JSON body to POST (before signing).
        alert_id: the alert it is about.
        id: row id once stored.
        attempts: tries so far.
    """

    idem_key: str
    channel: str
    recipient: str
    payload: dict[str, Any]
    alert_id: str | None = None
    id: int = 0
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class NewTask:
    """An inspection task to open for a firing alert."""

    alert_id: str
    district: str
    site_id: str
    device_id: str
    rule_id: str
    severity: str
    title: str
    description: str
    due_at: datetime


class Store:
    """The alerts database.

    Args:
        url: ``sqlite:///path`` or ``postgresql://...``.
        timeout_s: how long a statement may wait for a lock or a connection.
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        sa_url = engine_url(url)
        if sa_url.startswith("sqlite"):
            self.engine: Engine = create_engine(
                sa_url, connect_args={"timeout": timeout_s, "check_same_thread": False}
            )

            @event.listens_for(self.engine, "connect")
            def _pragmas(conn: Any, _record: Any) -> None:
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")  # readers (CLI, API) never block the writer
                cur.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
                cur.close()
        else:
            self.engine = create_engine(
                sa_url, pool_size=10, max_overflow=60, pool_timeout=timeout_s,
                connect_args={"connect_timeout": max(1, int(timeout_s))},
            )
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"{url.split('@')[-1]}: cannot prepare the alerts tables: {exc}") from exc

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    # --- alerts ---------------------------------------------------------------------------

    def open_alerts(self) -> list[Alert]:
        """Alerts not yet resolved (pending, firing, acknowledged), for the engine at start."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(alerts_table).where(alerts_table.c.state != AlertState.RESOLVED.value)
            ).mappings().all()
        return [_alert(row) for row in rows]

    def alerts(self, *, district: str | None = None, limit: int = 1000) -> list[Alert]:
        """Recent alerts, newest first."""
        query = select(alerts_table).order_by(alerts_table.c.since.desc()).limit(limit)
        if district is not None:
            query = query.where(alerts_table.c.district == district)
        with self.engine.connect() as conn:
            return [_alert(row) for row in conn.execute(query).mappings().all()]

    def record(
        self,
        alerts: Iterable[Alert],
        tasks: Sequence[NewTask],
        outbox: Sequence[OutboxItem],
        audits: Sequence[tuple[str, str, str, str]] = (),
        now: datetime | None = None,
    ) -> list[int]:
        """Write alert changes, new tasks and queued notifications in one transaction.

        Args:
            alerts: alerts to upsert (their latest snapshot).
            tasks: tasks to open; one per alert id (a repeat is ignored).
            outbox: notifications to queue; a repeated idempotency key is ignored.
            audits: ``(alert_id, actor, action, detail)`` lines for the alert's task.
            now: the time stamped on new rows.

        Returns:
            The ids of the tasks created.

        Raises:
            StoreUnavailable: the database failed.
        """
        now = now or datetime.now(UTC)
        created: list[int] = []
        latest = {a.alert_id: a for a in alerts}
        try:
            with self.engine.begin() as conn:
                for alert in latest.values():
                    row = _alert_row(alert)
                    done = conn.execute(
                        update(alerts_table).where(alerts_table.c.alert_id == alert.alert_id).values(**row)
                    )
                    if done.rowcount == 0:
                        conn.execute(insert(alerts_table).values(alert_id=alert.alert_id, **row))
                for task in tasks:
                    exists = conn.execute(
                        select(tasks_table.c.id).where(tasks_table.c.alert_id == task.alert_id)
                    ).first()
                    if exists:
                        continue
                    result = conn.execute(
                        insert(tasks_table).values(
                            status=TaskStatus.OPEN.value, created_at=now,
                            **{name: getattr(task, name) for name in NewTask.__slots__},
                        )
                    )
                    assert result.inserted_primary_key is not None
                    task_id = result.inserted_primary_key[0]
                    created.append(int(task_id))
                    _audit(conn, int(task_id), now, "system", "created", task.title)
                for alert_id, actor, action, detail in audits:
                    found = conn.execute(
                        select(tasks_table.c.id).where(tasks_table.c.alert_id == alert_id)
                    ).first()
                    if found:
                        if action == "alert_resolved":
                            conn.execute(update(tasks_table).where(tasks_table.c.id == found[0])
                                         .values(alert_resolved_at=now))
                        _audit(conn, int(found[0]), now, actor, action, detail)
                for item in outbox:
                    seen = conn.execute(
                        select(outbox_table.c.id).where(outbox_table.c.idem_key == item.idem_key)
                    ).first()
                    if seen:
                        continue
                    conn.execute(insert(outbox_table).values(
                        idem_key=item.idem_key, channel=item.channel, recipient=item.recipient,
                        alert_id=item.alert_id, payload=json.dumps(item.payload, ensure_ascii=False),
                        created_at=now, next_attempt_at=now, attempts=0,
                        status=DeliveryStatus.PENDING.value,
                    ))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot record alert changes: {exc}") from exc
        return created

    # --- silences ---------------------------------------------------------------------------

    def add_silence(self, silence: Silence) -> None:
        """Record a maintenance window."""
        with self.engine.begin() as conn:
            conn.execute(insert(silences_table).values(**{s: getattr(silence, s) for s in silence.__slots__}))

    def silences(self) -> list[Silence]:
        """Every recorded silence (the record of maintenance windows)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(silences_table).order_by(silences_table.c.starts)).mappings().all()
        return [
            Silence(id=r["id"], site_id=r["site_id"], device_id=r["device_id"], rule_id=r["rule_id"],
                    starts=_aware(r["starts"]) or r["starts"], ends=_aware(r["ends"]) or r["ends"],
                    reason=r["reason"], created_by=r["created_by"])
            for r in rows
        ]

    # --- tasks ----------------------------------------------------------------------------

    def tasks(self, *, districts: Iterable[str] | None = None, status: str | None = None,
              limit: int = 500) -> list[dict[str, Any]]:
        """Tasks, newest first, optionally only of some districts or one status."""
        query = select(tasks_table).order_by(tasks_table.c.id.desc()).limit(limit)
        if districts is not None:
            query = query.where(tasks_table.c.district.in_(list(districts)))
        if status is not None:
            query = query.where(tasks_table.c.status == status)
        with self.engine.connect() as conn:
            return [_task(row) for row in conn.execute(query).mappings().all()]

    def task(self, task_id: int) -> dict[str, Any] | None:
        """One task with its audit trail, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(tasks_table).where(tasks_table.c.id == task_id)).mappings().first()
            if row is None:
                return None
            trail = conn.execute(
                select(audit_table).where(audit_table.c.task_id == task_id).order_by(audit_table.c.id)
            ).mappings().all()
        out = _task(row)
        out["audit"] = [
            {"at": _aware(a["at"]), "actor": a["actor"], "action": a["action"], "detail": a["detail"]}
            for a in trail
        ]
        return out

    def claim(self, task_id: int, assignee: str, now: datetime) -> bool:
        """Claim an open task; exactly one of any number of concurrent claims succeeds.

        The conditional UPDATE (``WHERE status = 'open'``) is atomic on SQLite and PostgreSQL,
        so no lock needs to be taken first.

        Returns:
            True if this call claimed it; False if it was not open (or does not exist).
        """
        try:
            with self.engine.begin() as conn:
                done = conn.execute(
                    update(tasks_table)
                    .where(tasks_table.c.id == task_id, tasks_table.c.status == TaskStatus.OPEN.value)
                    .values(status=TaskStatus.CLAIMED.value, assignee=assignee, claimed_at=now)
                )
                if done.rowcount != 1:
                    return False
                _audit(conn, task_id, now, assignee, "claimed", "")
                return True
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot claim task {task_id}: {exc}") from exc

    def close_task(self, task_id: int, actor: str, finding: str, evidence: dict[str, Any],
                   now: datetime) -> bool:
        """Close a claimed (or resolved) task with a finding and evidence.

        Returns:
            False if the task is not claimed by ``actor``'s team member or already closed.
        """
        with self.engine.begin() as conn:
            done = conn.execute(
                update(tasks_table)
                .where(tasks_table.c.id == task_id,
                       tasks_table.c.status.in_([TaskStatus.CLAIMED.value, TaskStatus.RESOLVED.value]))
                .values(status=TaskStatus.CLOSED.value, closed_at=now, finding=finding,
                        evidence=json.dumps(evidence, ensure_ascii=False, default=str))
            )
            if done.rowcount != 1:
                return False
            _audit(conn, task_id, now, actor, "closed", finding)
            return True

    def overdue_tasks(self, now: datetime) -> list[dict[str, Any]]:
        """Tasks past due, not closed and not yet escalated."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(tasks_table).where(
                tasks_table.c.due_at < now,
                tasks_table.c.status.in_([TaskStatus.OPEN.value, TaskStatus.CLAIMED.value]),
                tasks_table.c.escalated_at.is_(None),
            )).mappings().all()
        return [_task(r) for r in rows]

    def mark_escalated(self, task_id: int, now: datetime, outbox: Sequence[OutboxItem]) -> None:
        """Record that an overdue task was escalated and queue its notifications."""
        with self.engine.begin() as conn:
            conn.execute(update(tasks_table).where(tasks_table.c.id == task_id).values(escalated_at=now))
            _audit(conn, task_id, now, "system", "overdue_escalated", "")
        self.record([], [], outbox, now=now)

    # --- outbox / delivery log ----------------------------------------------------------------

    def due_notifications(self, now: datetime, limit: int) -> list[OutboxItem]:
        """Pending notifications whose next attempt is due, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox_table)
                .where(outbox_table.c.status == DeliveryStatus.PENDING.value,
                       outbox_table.c.next_attempt_at <= now)
                .order_by(outbox_table.c.id).limit(limit)
            ).mappings().all()
        return [
            OutboxItem(idem_key=r["idem_key"], channel=r["channel"], recipient=r["recipient"],
                       payload=json.loads(r["payload"]), alert_id=r["alert_id"], id=r["id"],
                       attempts=r["attempts"])
            for r in rows
        ]

    def delivered_recently(self, recipient: str, since: datetime) -> int:
        """How many messages a recipient was sent since ``since`` (rate limiting)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(outbox_table.c.id).where(
                outbox_table.c.recipient == recipient,
                outbox_table.c.status == DeliveryStatus.DELIVERED.value,
                outbox_table.c.delivered_at >= since,
            )).all()
        return len(rows)

    def mark_delivery(self, item_id: int, status: DeliveryStatus, now: datetime, *,
                      error: str | None = None, retry_at: datetime | None = None,
                      count_attempt: bool = True) -> None:
        """Record the outcome of an attempt."""
        values: dict[str, Any] = {"status": status.value, "last_error": error}
        if count_attempt:
            values["attempts"] = outbox_table.c.attempts + 1
        if status is DeliveryStatus.DELIVERED:
            values["delivered_at"] = now
        if retry_at is not None:
            values["next_attempt_at"] = retry_at
        with self.engine.begin() as conn:
            conn.execute(update(outbox_table).where(outbox_table.c.id == item_id).values(**values))

    def deliveries(self, *, recipient: str | None = None, alert_id: str | None = None,
                   limit: int = 200) -> list[dict[str, Any]]:
        """The delivery log: who was told what, when, and whether it arrived; newest first."""
        query = select(outbox_table).order_by(outbox_table.c.id.desc()).limit(limit)
        if recipient is not None:
            query = query.where(outbox_table.c.recipient == recipient)
        if alert_id is not None:
            query = query.where(outbox_table.c.alert_id == alert_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        out = []
        for r in rows:
            row = dict(r)
            row["payload"] = json.loads(row["payload"])
            for k in ("created_at", "next_attempt_at", "delivered_at"):
                row[k] = _aware(row[k])
            out.append(row)
        return out

    def pending_count(self) -> int:
        """Notifications not yet delivered nor given up."""
        with self.engine.connect() as conn:
            return len(conn.execute(select(outbox_table.c.id).where(
                outbox_table.c.status == DeliveryStatus.PENDING.value)).all())


def _audit(conn: Any, task_id: int, at: datetime, actor: str, action: str, detail: str) -> None:
    conn.execute(
        insert(audit_table).values(task_id=task_id, at=at, actor=actor, action=action, detail=detail)
    )


def _alert_row(a: Alert) -> dict[str, Any]:
    return {
        "site_id": a.site_id, "device_id": a.device_id, "rule_id": a.rule_id, "kind": a.kind.value,
        "district": a.district, "severity": a.severity.value, "state": a.state.value, "since": a.since,
        "fired_at": a.fired_at, "notified_at": a.notified_at, "opened_at": a.opened_at,
        "resolved_at": a.resolved_at, "acked_at": a.acked_at, "acked_by": a.acked_by,
        "value": a.value, "threshold": a.threshold, "level": a.level, "late": a.late,
        "silenced": a.silenced, "inhibited": a.inhibited,
    }


def _alert(r: Any) -> Alert:
    return Alert(
        alert_id=r["alert_id"], site_id=r["site_id"], device_id=r["device_id"], rule_id=r["rule_id"],
        kind=Kind(r["kind"]), district=r["district"], severity=Severity(r["severity"]),
        state=AlertState(r["state"]), since=_aware(r["since"]) or r["since"],
        fired_at=_aware(r["fired_at"]), notified_at=_aware(r["notified_at"]),
        opened_at=_aware(r["opened_at"]), resolved_at=_aware(r["resolved_at"]),
        acked_at=_aware(r["acked_at"]), acked_by=r["acked_by"], value=r["value"],
        threshold=r["threshold"], level=r["level"], late=r["late"], silenced=r["silenced"],
        inhibited=r["inhibited"],
    )


def _task(r: Any) -> dict[str, Any]:
    out = dict(r)
    for k in ("created_at", "due_at", "claimed_at", "closed_at", "alert_resolved_at", "escalated_at"):
        out[k] = _aware(out[k])
    out["evidence"] = json.loads(out["evidence"]) if out["evidence"] else None
    return out

