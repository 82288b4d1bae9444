"""The alerts database (SQLAlchemy 2 Core over ``[tasks] url``).

It holds alerts, inspection tasks and their audit trail, silences, and the notification
outbox that doubles as the delivery log.

SQLite is the embedded default, PostgreSQL is chosen by URL. Every method is synchronous and
short; the async service calls them through one worker thread. The engine's transitions, the
tasks they create and the notifications they queue are written in one transaction, so a
crash cannot fire an alert without its task and messages, or send a message twice.

The schema is versioned with Alembic (``alerts/migrations``): :func:`migrate` brings a
database to the newest revision, and every :class:`Store` calls it when it opens. Outbox
items are claimed (status ``sending``) before they are sent, so any number of workers on one
database make exactly one delivery attempt per notification.

TasksDbUnavailable   the database could not be reached or refused a statement
PartitionLost      a write was fenced off: this process no longer holds its partition's lock
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    inspect,
    make_url,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from alerts.engine import Alert, Silence
from weijian.contract import AlertState, Kind
from weijian.errors import PartitionLost, TasksDbUnavailable
from weijian.rules import Severity

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "DeliveryStatus",
    "Fence",
    "NewTask",
    "OutboxItem",
    "PartitionLost",
    "Store",
    "TaskStatus",
    "TasksDbUnavailable",
    "engine_url",
    "in_db_thread",
    "migrate",
]

log = logging.getLogger(__name__)

# Alembic logs at INFO when it is imported ("setup plugin ...") and for every context it sets
# up ("Context impl ..."), and every Store() runs it; we log the upgrades ourselves. So alembic
# is imported in the functions that use it, after this. An explicit level set elsewhere wins.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)


# The alerts stage's database calls run in threads of their own. On asyncio's default executor
# (a handful of threads on a small machine) a database that hangs (a lock, a vanished server)
# held every thread, and the calls other stages make there waited behind it: ingest's MQTT
# connects, the InfluxDB 2.x writes. Threads are made only when needed; eight, as many as the
# default partitions (each session makes one call at a time), and within the 15 connections
# of SQLAlchemy's default pool, which a SQLite tasks database uses.
_P = ParamSpec("_P")
_T = TypeVar("_T")
_DB_THREADS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="alerts-db")


async def in_db_thread(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``asyncio.to_thread`` on the alerts stage's own threads (see ``_DB_THREADS``)."""
    call = functools.partial(fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_DB_THREADS, call)


class TaskStatus(StrEnum):
    """Lifecycle of an inspection task (巡查核查任务)."""

    OPEN = "open"  # in the district's queue, nobody has it
    CLAIMED = "claimed"  # an inspector took it
    RESOLVED = "resolved"  # the inspector reports the cause removed, pending the finding
    CLOSED = "closed"  # closed with a finding (处置闭环)


class DeliveryStatus(StrEnum):
    """Where a queued notification stands."""

    PENDING = "pending"  # not yet delivered; ``next_attempt_at`` says when it is tried
    SENDING = "sending"  # claimed by ``claimed_by`` at ``claimed_at``; being sent right now
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up (permanent error or attempts exhausted)
    FOLDED = "folded"  # over the channel's budget: waits to go out inside a summary message
    SUMMARIZED = "summarized"  # went out inside the summary named in ``last_error``


metadata = MetaData()

_ts = DateTime(timezone=True)
_IDS_PER_QUERY = 500  # bound parameters per IN (...): well inside SQLite's and PostgreSQL's limits

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
    Column("claimed_by", String(64)),  # the worker sending it (status sending); revision 0002
    Column("claimed_at", _ts),
    Column("provider_ref", String(64), index=True),  # the SMS provider's id for it; revision 0004
    Column("receipt", String(64)),  # the provider's delivery receipt: DELIVERED or its error code
    Column("receipt_at", _ts),
)

accounts_table = Table(  # revision 0005: inspectors, duty desk, supervisors (alerts/accounts.py)
    "alerts_accounts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("name", String(64), nullable=False),
    Column("phone", String(20), nullable=False),
    Column("team", String(64), nullable=False),
    Column("districts", Text, nullable=False),  # JSON list of district ids
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=False),  # argon2id
    Column("disabled", Boolean, nullable=False),
    Column("failed_logins", Integer, nullable=False),  # in a row
    Column("locked_until", _ts),
    Column("created_at", _ts, nullable=False),
    Column("updated_at", _ts, nullable=False),
)

account_tokens_table = Table(  # revision 0005: access and refresh tokens, stored as SHA-256
    "alerts_account_tokens", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("alerts_accounts.id"), nullable=False, index=True),
    Column("session_id", String(32), nullable=False, index=True),  # a login; refresh keeps it
    Column("kind", String(8), nullable=False),  # access | refresh
    Column("created_at", _ts, nullable=False),
    Column("expires_at", _ts, nullable=False),
    Column("revoked_at", _ts),
)

task_photos_table = Table(  # revision 0005: evidence photos, kept with their SHA-256
    "alerts_task_photos", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("alerts_tasks.id"), nullable=False, index=True),
    Column("sha256", String(64), nullable=False),
    Column("media_type", String(32), nullable=False),
    Column("size", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("uploaded_by", String(128), nullable=False),
    Column("uploaded_at", _ts, nullable=False),
)

engine_state_table = Table(  # revision 0002
    "alerts_engine_state", metadata,
    Column("key", String(64), primary_key=True),
    Column("state", Text, nullable=False),  # JSON, opaque to the store
    Column("updated_at", _ts, nullable=False),
    Column("epoch", Integer, nullable=False, server_default="0"),  # revision 0003: the fencing token
)


def engine_url(url: str) -> str:
    """Map a ``[tasks] url`` to a SQLAlchemy URL (``postgresql://`` uses psycopg 3)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _make_engine(url: str, timeout_s: float) -> Engine:
    sa_url = engine_url(url)
    if sa_url.startswith("sqlite"):
        engine = create_engine(sa_url, connect_args={"timeout": timeout_s, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers (CLI, API) never block the writer
            cur.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            cur.close()

        return engine
    return create_engine(
        sa_url, pool_size=10, max_overflow=60, pool_timeout=timeout_s,
        connect_args={"connect_timeout": max(1, int(timeout_s))},
    )


def shown_url(url: str | URL) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        parsed = make_url(url)
    except ArgumentError:  # unparsable: show only what follows the credentials
        return str(url).split("@")[-1]
    # URL.set(password=None) means "leave it", so replace the field of the named tuple.
    return parsed._replace(password=None).render_as_string(hide_password=False)


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# pg_advisory_lock key of schema migrations: any fixed int8, the same in every weijian
# process. It is database-wide (not per schema), so migrations of two schemas of one database
# wait for each other, which costs nothing.
MIGRATION_LOCK_KEY = 0x7765696A69616E01  # "weijian" + 01

# The tables revision 0001 creates: an unversioned database that has them was made by
# ``metadata.create_all`` before migrations existed.
_REVISION_0001_TABLES = frozenset(
    {"alerts_alerts", "alerts_tasks", "alerts_task_audit", "alerts_silences", "alerts_outbox"}
)


def _alembic_config(conn: Any) -> Config:
    from alembic.config import Config

    config = Config()
    # ConfigParser interpolates "%": a folder name containing one must be escaped.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = conn
    return config


def _current_revision(conn: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout_s``."""
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} is locked by another migration for {timeout_s} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _migration_lock(conn: Any, timeout_s: float) -> Iterator[None]:
    """Serialise migrations of one database across processes.

    PostgreSQL: a session advisory lock on the migrating connection (it outlives the
    transactions run under it). SQLite: a ``flock`` on ``<db path>.migrate.lock``, taken
    before the transaction, since SQLite runs ``CREATE TABLE`` outside pysqlite's implicit
    transactions and two processes could otherwise both see an empty file.
    """
    if conn.dialect.name == "postgresql":
        # lock_timeout bounds the wait for an advisory lock too; reset before the upgrade.
        wait = f"{int(timeout_s * 1000)}ms"
        conn.execute(text("SELECT set_config('lock_timeout', :v, false)"), {"v": wait})
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.execute(text("SELECT set_config('lock_timeout', '0', false)"))
        conn.commit()
        try:
            yield
        finally:
            conn.rollback()  # a failed upgrade leaves the transaction aborted
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
    elif conn.dialect.name == "sqlite" and conn.engine.url.database not in (None, "", ":memory:"):
        conn.rollback()
        with _file_lock(Path(f"{conn.engine.url.database}.migrate.lock"), timeout_s):
            yield
    else:
        yield


def migrate(engine_or_url: Engine | str, timeout_s: float = 60.0) -> tuple[str | None, str]:
    """Bring the alerts database to the newest schema revision (``alembic upgrade head``).

    Safe to call from several processes at once: the upgrade runs under a migration lock,
    and the revision is read again once the lock is held. A database with the alerts tables
    but no ``alembic_version`` (made by ``create_all`` before migrations existed) is stamped
    ``0001`` first, keeping every row.

    Args:
        engine_or_url: a SQLAlchemy engine, or a ``[tasks] url``.
        timeout_s: how long to wait for another process's migration to finish.

    Returns:
        ``(revision before, revision after)``; before is None for an empty database and
        ``"0001"`` for an unversioned one.

    Raises:
        TasksDbUnavailable: the database could not be reached, was locked for longer than
            ``timeout_s``, or refused a migration statement.
    """
    from alembic import command
    from alembic.script import ScriptDirectory

    if isinstance(engine_or_url, str):
        engine, where = _make_engine(engine_or_url, min(timeout_s, 10.0)), shown_url(engine_or_url)
    else:
        engine, where = engine_or_url, shown_url(engine_or_url.url)
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None, "alerts/migrations/versions holds no revision"
    try:
        with engine.connect() as conn:
            before = _current_revision(conn)
            if before == head:
                return before, head
            with _migration_lock(conn, timeout_s):
                before = _current_revision(conn)  # another process may have migrated meanwhile
                if before == head:
                    return before, head
                config = _alembic_config(conn)
                if before is None:
                    tables = set(inspect(conn).get_table_names()) & _REVISION_0001_TABLES
                    if tables == _REVISION_0001_TABLES:
                        log.warning("alerts.schema_unversioned_stamped", extra={"revision": "0001"})
                        command.stamp(config, "0001")
                        before = "0001"
                    elif tables:
                        raise TasksDbUnavailable(
                            f"{where}: some alerts tables exist ({', '.join(sorted(tables))}) but not "
                            f"all, and there is no alembic_version: not a database weijian made")
                command.upgrade(config, "head")
                conn.commit()
                after = _current_revision(conn)
                conn.commit()
                log.info("alerts.schema_upgraded", extra={"from": before, "to": after})
    except (SQLAlchemyError, TimeoutError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip()  # the driver's words, not SQLAlchemy's
        raise TasksDbUnavailable(f"{where}: cannot migrate the alerts tables: {detail}") from exc
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()
    assert after == head, f"upgrade ended at {after}, not {head}"
    return before, head


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


@dataclass(frozen=True)
class Fence:
    """A PostgreSQL two-key advisory lock that a write requires to be still held.

    ``pg_advisory_lock(classid, objid)`` taken by the backend with process id ``pid`` (what
    ``pg_backend_pid()`` returned on the connection holding it). The lock goes when that
    connection ends, so a writer whose session died, or was taken over, cannot write.

    Attributes:
        classid: the first int4 key.
        objid: the second int4 key.
        pid: the backend process id of the connection holding the lock.
    """

    classid: int
    objid: int
    pid: int


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
        self.engine: Engine = _make_engine(url, timeout_s)
        try:
            migrate(self.engine, timeout_s=max(60.0, timeout_s))
        except TasksDbUnavailable:
            self.engine.dispose()
            raise
        self._is_postgres = self.engine.dialect.name == "postgresql"
        # One UPDATE ... RETURNING claims outbox items (SQLite >= 3.35, PostgreSQL); without
        # it, each row is claimed by its own conditional UPDATE.
        self._update_returning = bool(self.engine.dialect.update_returning)

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
        *,
        state: tuple[str, str] | None = None,
        fence: Fence | None = None,
        epoch: int | None = None,
    ) -> list[int]:
        """Write alert changes, new tasks, queued notifications and engine state in one transaction.

        Args:
            alerts: alerts to upsert (their latest snapshot).
            tasks: tasks to open; one per alert id (a repeat is ignored).
            outbox: notifications to queue; a repeated idempotency key is ignored.
            audits: ``(alert_id, actor, action, detail)`` lines for the alert's task.
            now: the time stamped on new rows.
            state: ``(key, json_text)`` to upsert into ``alerts_engine_state`` (see
                :meth:`engine_states`), written even when nothing else is.
            epoch: with ``state``, the epoch :meth:`take_over` gave this writer; the state row is
                updated only while it still has that epoch (checked first, under the row's lock),
                else PartitionLost. None: upsert without a check.
            fence: on PostgreSQL, the advisory lock this writer must still hold; checked first,
                inside the transaction. Ignored on SQLite (one process owns a SQLite file).

        Returns:
            The ids of the tasks created.

        Raises:
            PartitionLost: the fence's lock is not held by its pid; nothing was written.
            TasksDbUnavailable: the database failed.
        """
        now = now or datetime.now(UTC)
        created: list[int] = []
        latest = {a.alert_id: a for a in alerts}
        try:
            with self.engine.begin() as conn:
                if state is not None and epoch is not None:
                    # First, and it locks the row: a takeover's epoch bump waits for this
                    # transaction, and this one finds the epoch moved on after a takeover.
                    done = conn.execute(
                        update(engine_state_table)
                        .where(engine_state_table.c.key == state[0], engine_state_table.c.epoch == epoch)
                        .values(state=state[1], updated_at=now)
                    )
                    if done.rowcount != 1:
                        raise PartitionLost(f"{state[0]}: taken over since epoch {epoch}")
                if fence is not None and self._is_postgres:
                    _check_fence(conn, fence)
                if state is not None and epoch is None:
                    self._upsert_state(conn, state[0], state[1], now)
                if latest:  # one statement for all of them: each round trip costs the loop's GIL
                    rows = [{"alert_id": a.alert_id, **_alert_row(a)} for a in latest.values()]
                    upsert = (pg_insert if self._is_postgres else sqlite_insert)(alerts_table)
                    conn.execute(upsert.on_conflict_do_update(
                        index_elements=[alerts_table.c.alert_id],
                        set_={name: upsert.excluded[name] for name in _ALERT_COLUMNS},
                    ), rows)
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
                _queue(conn, outbox, now)
        except SQLAlchemyError as exc:
            raise TasksDbUnavailable(f"cannot record alert changes: {exc}") from exc
        return created

    def _upsert_state(self, conn: Any, key: str, state_json: str, now: datetime) -> None:
        dialect_insert = pg_insert if self._is_postgres else sqlite_insert
        stmt = dialect_insert(engine_state_table).values(key=key, state=state_json, updated_at=now)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[engine_state_table.c.key],
            set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at},
        ))

    def take_over(self, key: str, now: datetime) -> int:
        """Become the holder of an engine state: increment and return its epoch (the fencing token).

        Call it before loading the partition's alerts and state; pass the epoch to every
        :meth:`record` of the partition. A row that does not exist yet is created empty (``{}``).

        Raises:
            TasksDbUnavailable: the database failed.
        """
        dialect_insert = pg_insert if self._is_postgres else sqlite_insert
        stmt = dialect_insert(engine_state_table).values(key=key, state="{}", updated_at=now, epoch=1)
        bump = stmt.on_conflict_do_update(
            index_elements=[engine_state_table.c.key],
            set_={"epoch": engine_state_table.c.epoch + 1},
        ).returning(engine_state_table.c.epoch)
        try:
            with self.engine.begin() as conn:
                return int(conn.execute(bump).scalar_one())
        except SQLAlchemyError as exc:
            raise TasksDbUnavailable(f"cannot take over the engine state {key}: {exc}") from exc

    def engine_states(self) -> dict[str, str]:
        """Every saved engine state: key -> the JSON text given to :meth:`record`.

        Raises:
            TasksDbUnavailable: the database failed.
        """
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(engine_state_table.c.key, engine_state_table.c.state)).all()
        except SQLAlchemyError as exc:
            raise TasksDbUnavailable(f"cannot read the engine state: {exc}") from exc
        return {key: state for key, state in rows}

    # --- silences ---------------------------------------------------------------------------

    def add_silence(self, silence: Silence) -> None:
        """Record a maintenance window."""
        with self.engine.begin() as conn:
            conn.execute(insert(silences_table).values(**{s: getattr(silence, s) for s in silence.__slots__}))

    def silences(self, *, active_at: datetime | None = None) -> list[Silence]:
        """Every recorded silence (the record), or only those not ended at ``active_at``."""
        query = select(silences_table).order_by(silences_table.c.starts)
        if active_at is not None:
            query = query.where(silences_table.c.ends > active_at)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            Silence(id=r["id"], site_id=r["site_id"], device_id=r["device_id"], rule_id=r["rule_id"],
                    starts=_aware(r["starts"]) or r["starts"], ends=_aware(r["ends"]) or r["ends"],
                    reason=r["reason"], created_by=r["created_by"])
            for r in rows
        ]

    # --- tasks ----------------------------------------------------------------------------

    def tasks(self, *, districts: Iterable[str] | None = None, status: str | None = None,
              assignee: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Tasks, newest first, optionally only of some districts, one status or one assignee."""
        query = select(tasks_table).order_by(tasks_table.c.id.desc()).limit(limit)
        if districts is not None:
            query = query.where(tasks_table.c.district.in_(list(districts)))
        if status is not None:
            query = query.where(tasks_table.c.status == status)
        if assignee is not None:
            query = query.where(tasks_table.c.assignee == assignee)
        with self.engine.connect() as conn:
            return [_task(row) for row in conn.execute(query).mappings().all()]

    def taken_tasks(self, alert_ids: Sequence[str]) -> list[tuple[str, str]]:
        """``(alert_id, assignee)`` of the tasks of these alerts that someone has taken.

        Claimed, resolved or closed: a task claimed and closed between two ticks of the service
        has been taken as much as one still claimed.
        """
        taken = [TaskStatus.CLAIMED.value, TaskStatus.RESOLVED.value, TaskStatus.CLOSED.value]
        out: list[tuple[str, str]] = []
        with self.engine.connect() as conn:
            for i in range(0, len(alert_ids), _IDS_PER_QUERY):
                query = select(tasks_table.c.alert_id, tasks_table.c.assignee).where(
                    tasks_table.c.alert_id.in_(alert_ids[i:i + _IDS_PER_QUERY]),
                    tasks_table.c.status.in_(taken))
                out += [(r.alert_id, r.assignee or "?") for r in conn.execute(query)]
        return out

    def desk_tasks(self, districts: Iterable[str], limit: int = 500) -> list[dict[str, Any]]:
        """The districts' tasks not yet closed, the earliest due (so the overdue) first."""
        query = (select(tasks_table)
                 .where(tasks_table.c.district.in_(list(districts)),
                        tasks_table.c.status != TaskStatus.CLOSED.value)
                 .order_by(tasks_table.c.due_at, tasks_table.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [_task(row) for row in conn.execute(query).mappings().all()]

    def alert(self, alert_id: str) -> Alert | None:
        """One alert by id, or None."""
        with self.engine.connect() as conn:
            query = select(alerts_table).where(alerts_table.c.alert_id == alert_id)
            row = conn.execute(query).mappings().first()
        return _alert(row) if row is not None else None

    def reassign(self, task_id: int, assignee: str, actor: str, now: datetime) -> bool:
        """Give an open or claimed task to ``assignee`` (claimed by them). False if it is closed."""
        with self.engine.begin() as conn:
            row = conn.execute(select(tasks_table.c.assignee, tasks_table.c.status)
                               .where(tasks_table.c.id == task_id).with_for_update()).mappings().first()
            if row is None or row["status"] not in (TaskStatus.OPEN.value, TaskStatus.CLAIMED.value):
                return False
            conn.execute(update(tasks_table).where(tasks_table.c.id == task_id).values(
                status=TaskStatus.CLAIMED.value, assignee=assignee, claimed_at=now))
            _audit(conn, task_id, now, actor, "reassigned", f"{row['assignee'] or '-'} -> {assignee}")
            return True

    def add_photo(self, task_id: int, *, sha256: str, media_type: str, data: bytes, by: str,
                  now: datetime, max_photos: int) -> bool:
        """Keep a photo of a claimed task (once per SHA-256). False when the task has ``max_photos``."""
        with self.engine.begin() as conn:
            known = conn.execute(select(task_photos_table.c.sha256)
                                 .where(task_photos_table.c.task_id == task_id)).scalars().all()
            if sha256 in known:
                return True
            if len(known) >= max_photos:
                return False
            conn.execute(insert(task_photos_table).values(
                task_id=task_id, sha256=sha256, media_type=media_type, size=len(data), data=data,
                uploaded_by=by, uploaded_at=now))
            _audit(conn, task_id, now, by, "photo_added", f"{sha256} {media_type} {len(data)} bytes")
            return True

    def photos(self, task_id: int) -> list[dict[str, Any]]:
        """The task's photos without their bytes: sha256, media_type, size, uploaded_by, uploaded_at."""
        cols = [task_photos_table.c.sha256, task_photos_table.c.media_type, task_photos_table.c.size,
                task_photos_table.c.uploaded_by, task_photos_table.c.uploaded_at]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*cols).where(task_photos_table.c.task_id == task_id)
                                .order_by(task_photos_table.c.id)).mappings().all()
        return [dict(r) | {"uploaded_at": _aware(r["uploaded_at"])} for r in rows]

    def photo(self, task_id: int, sha256: str) -> tuple[str, bytes] | None:
        """A photo's type and bytes, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(task_photos_table.c.media_type, task_photos_table.c.data).where(
                task_photos_table.c.task_id == task_id, task_photos_table.c.sha256 == sha256)).first()
        return (row[0], bytes(row[1])) if row is not None else None

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

    def claim(self, task_id: int, assignee: str, now: datetime, actor: str | None = None) -> bool:
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
                _audit(conn, task_id, now, actor or assignee, "claimed", "" if actor is None else assignee)
                return True
        except SQLAlchemyError as exc:
            raise TasksDbUnavailable(f"cannot claim task {task_id}: {exc}") from exc

    def close_task(self, task_id: int, actor: str, finding: str, evidence: dict[str, Any],
                   now: datetime, *, assignee: str | None = None) -> bool:
        """Close a claimed (or resolved) task with a finding and evidence.

        Returns:
            False if the task is not claimed (by ``assignee``, when given) or already closed.
        """
        with self.engine.begin() as conn:
            where = [tasks_table.c.id == task_id,
                     tasks_table.c.status.in_([TaskStatus.CLAIMED.value, TaskStatus.RESOLVED.value])]
            if assignee is not None:
                where.append(tasks_table.c.assignee == assignee)
            done = conn.execute(
                update(tasks_table)
                .where(*where)
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

    def mark_escalated(self, task_id: int, now: datetime, outbox: Sequence[OutboxItem]) -> bool:
        """Record that an overdue task was escalated and queue its notifications, once.

        The conditional UPDATE (``WHERE escalated_at IS NULL``) lets one of any number of
        concurrent callers escalate; only that one writes the audit line and the outbox items,
        in the same transaction.

        Returns:
            True if this call escalated the task; False if it was already escalated (or unknown).

        Raises:
            TasksDbUnavailable: the database failed.
        """
        try:
            with self.engine.begin() as conn:
                done = conn.execute(
                    update(tasks_table)
                    .where(tasks_table.c.id == task_id, tasks_table.c.escalated_at.is_(None))
                    .values(escalated_at=now)
                )
                if done.rowcount != 1:
                    return False
                _audit(conn, task_id, now, "system", "overdue_escalated", "")
                _queue(conn, outbox, now)
                return True
        except SQLAlchemyError as exc:
            raise TasksDbUnavailable(f"cannot escalate task {task_id}: {exc}") from exc

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
        return [_outbox_item(r) for r in rows]

    def claim_notifications(self, now: datetime, limit: int, worker: str,
                            lease_s: float = 300.0) -> list[OutboxItem]:
        """Take up to ``limit`` due notifications to send: they become ``sending``, claimed by ``worker``.

        Due means pending with ``next_attempt_at <= now``, or ``sending`` but claimed more than
        ``lease_s`` ago (its worker died mid-send). The claim is atomic: concurrent workers on
        one database get disjoint items, so each notification gets one delivery attempt at a
        time. The worker then settles each item with :meth:`mark_delivery`.

        Args:
            now: the current time (stamped as ``claimed_at``).
            limit: the most items to claim.
            worker: who claims them, e.g. ``host-pid``; at most 64 characters.
            lease_s: how long a claim holds before another worker may take the item over;
                longer than any send can take.

        Returns:
            The claimed items, oldest first.

        Raises:
            TasksDbUnavailable: the database failed.
        """
        o = outbox_table.c
        due = or_(
            (o.status == DeliveryStatus.PENDING.value) & (o.next_attempt_at <= now),
            (o.status == DeliveryStatus.SENDING.value) & (o.claimed_at < now - timedelta(seconds=lease_s)),
        )
        claim = {"status": DeliveryStatus.SENDING.value, "claimed_by": worker, "claimed_at": now}
        try:
            with self.engine.begin() as conn:
                if self._update_returning:
                    # PostgreSQL: SKIP LOCKED lets concurrent claimers pass each other's rows
                    # instead of queueing behind them; a row committed as claimed meanwhile no
                    # longer matches ``due`` when rechecked. SQLite ignores FOR UPDATE: the
                    # one UPDATE statement holds the database's write lock.
                    ids = (select(o.id).where(due).order_by(o.id).limit(limit)
                           .with_for_update(skip_locked=True))
                    rows = conn.execute(
                        update(outbox_table).where(o.id.in_(ids)).values(**claim).returning(outbox_table)
                    ).mappings().all()
                else:
                    rows = []
                    for (item_id,) in conn.execute(select(o.id).where(due).order_by(o.id).limit(limit)).all():
                        # Conditional per row: a row another worker claimed meanwhile is skipped.
                        done = conn.execute(
                            update(outbox_table).where(o.id == item_id, due).values(**claim)
                        )
                        if done.rowcount == 1:
                            rows.append(conn.execute(select(outbox_table).where(o.id == item_id))
                                        .mappings().one())
        except SQLAlchemyError as exc:
            raise TasksDbUnavailable(f"cannot claim notifications: {exc}") from exc
        return [_outbox_item(r) for r in sorted(rows, key=lambda r: r["id"])]

    def delivered_recently(self, recipient: str, since: datetime) -> int:
        """How many messages a recipient was sent since ``since`` (rate limiting)."""
        return self.delivered_counts(recipient, [since])[0]

    def delivered_counts(self, recipient: str, since: Sequence[datetime]) -> list[int]:
        """How many messages a recipient was sent since each of ``since``, in one query."""
        with self.engine.connect() as conn:
            times = conn.execute(select(outbox_table.c.delivered_at).where(
                outbox_table.c.recipient == recipient,
                outbox_table.c.status == DeliveryStatus.DELIVERED.value,
                outbox_table.c.delivered_at >= min(since),
            )).scalars().all()
        stamps = [t for t in (_aware(t) for t in times) if t is not None]
        bounds = [b.astimezone(UTC) for b in since]
        return [sum(1 for t in stamps if t >= b) for b in bounds]

    def mark_delivery(self, item_id: int, status: DeliveryStatus, now: datetime, *,
                      error: str | None = None, retry_at: datetime | None = None,
                      count_attempt: bool = True, provider_ref: str | None = None) -> None:
        """Record the outcome of an attempt (and the provider's id for the message, if any)."""
        values: dict[str, Any] = {"status": status.value, "last_error": error}
        if provider_ref is not None:
            values["provider_ref"] = provider_ref
        if count_attempt:
            values["attempts"] = outbox_table.c.attempts + 1
        if status is DeliveryStatus.DELIVERED:
            values["delivered_at"] = now
        if retry_at is not None:
            values["next_attempt_at"] = retry_at
        with self.engine.begin() as conn:
            conn.execute(update(outbox_table).where(outbox_table.c.id == item_id).values(**values))

    def folded(self, limit: int = 500) -> list[OutboxItem]:
        """Items over their channel's budget, oldest first, not yet in a summary."""
        query = (select(outbox_table).where(outbox_table.c.status == DeliveryStatus.FOLDED.value)
                 .order_by(outbox_table.c.id).limit(limit))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_outbox_item(r) for r in rows]

    def record_receipt(self, provider_ref: str, recipient: str | None, receipt: str, at: datetime) -> int:
        """A provider's delivery receipt for the message it knows as ``provider_ref``.

        Returns:
            How many rows it matched (0: not ours, or not yet recorded as sent).
        """
        query = update(outbox_table).where(outbox_table.c.provider_ref == provider_ref)
        if recipient is not None:
            query = query.where(outbox_table.c.recipient == recipient)
        with self.engine.begin() as conn:
            return int(conn.execute(query.values(receipt=receipt[:64], receipt_at=at)).rowcount)

    def summary_waiting(self, channel: str, recipient: str) -> bool:
        """Whether a summary for this recipient is queued and not yet sent."""
        prefix = f"summary:{channel}:{recipient}:"
        with self.engine.connect() as conn:
            row = conn.execute(select(outbox_table.c.id).where(
                outbox_table.c.idem_key.startswith(prefix, autoescape=True),
                outbox_table.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]),
            ).limit(1)).first()
        return row is not None

    def summarize(self, summary: OutboxItem, folded_ids: Sequence[int], now: datetime) -> None:
        """Queue ``summary`` and mark the folded items it covers, in one transaction."""
        with self.engine.begin() as conn:
            _queue(conn, [summary], now)  # a second worker's identical summary is the same key
            conn.execute(update(outbox_table).where(
                outbox_table.c.id.in_(list(folded_ids)),
                outbox_table.c.status == DeliveryStatus.FOLDED.value,
            ).values(status=DeliveryStatus.SUMMARIZED.value, last_error=f"in {summary.idem_key}"))

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
            for k in ("created_at", "next_attempt_at", "delivered_at", "receipt_at"):
                row[k] = _aware(row[k])
            out.append(row)
        return out

    def pending_count(self) -> int:
        """Notifications not yet delivered nor given up (pending, or being sent)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(outbox_table).where(
                outbox_table.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value])
            )).scalar_one())


def _check_fence(conn: Any, fence: Fence) -> None:
    """Raise :class:`PartitionLost` unless ``fence``'s advisory lock is granted to its pid."""
    # pg_locks shows the two int4 keys as oid (unsigned 32-bit): -1 is 4294967295 there.
    held = conn.execute(text(
        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = CAST(:c AS oid) "
        "AND objid = CAST(:o AS oid) AND objsubid = 2 AND pid = :pid AND granted"
    ), {"c": fence.classid & 0xFFFFFFFF, "o": fence.objid & 0xFFFFFFFF, "pid": fence.pid}).first()
    if held is None:
        raise PartitionLost(
            f"advisory lock ({fence.classid}, {fence.objid}) is not held by backend {fence.pid}: "
            f"the partition was lost, nothing written")


def _queue(conn: Any, outbox: Sequence[OutboxItem], now: datetime) -> None:
    """Insert outbox items, skipping any whose idempotency key is already queued (one statement)."""
    if not outbox:
        return
    rows = [{
        "idem_key": item.idem_key, "channel": item.channel, "recipient": item.recipient,
        "alert_id": item.alert_id, "payload": json.dumps(item.payload, ensure_ascii=False),
        "created_at": now, "next_attempt_at": now, "attempts": 0, "status": DeliveryStatus.PENDING.value,
    } for item in outbox]
    add = (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(outbox_table)
    conn.execute(add.on_conflict_do_nothing(index_elements=[outbox_table.c.idem_key]), rows)


def _outbox_item(r: Any) -> OutboxItem:
    return OutboxItem(idem_key=r["idem_key"], channel=r["channel"], recipient=r["recipient"],
                      payload=json.loads(r["payload"]), alert_id=r["alert_id"], id=r["id"],
                      attempts=r["attempts"])


def _audit(conn: Any, task_id: int, at: datetime, actor: str, action: str, detail: str) -> None:
    conn.execute(
        insert(audit_table).values(task_id=task_id, at=at, actor=actor, action=action, detail=detail)
    )


_ALERT_COLUMNS: Final = tuple(c.name for c in alerts_table.columns if c.name != "alert_id")


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

