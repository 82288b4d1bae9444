"""0001: the alerts schema as ``metadata.create_all`` made it before migrations existed.

Alerts, inspection tasks with their audit trail, silences and the notification outbox. A
database created by that older code has exactly these tables and no ``alembic_version``;
:func:`alerts.store.migrate` stamps it ``0001`` instead of running this.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the five ``alerts_`` tables and their indexes."""
    op.create_table(
        "alerts_alerts",
        sa.Column("alert_id", sa.String(40), primary_key=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("district", sa.String(64), nullable=False, index=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("since", _ts, nullable=False),
        sa.Column("fired_at", _ts), sa.Column("notified_at", _ts), sa.Column("opened_at", _ts),
        sa.Column("resolved_at", _ts), sa.Column("acked_at", _ts), sa.Column("acked_by", sa.String(128)),
        sa.Column("value", sa.Float), sa.Column("threshold", sa.Float),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("late", sa.Boolean, nullable=False),
        sa.Column("silenced", sa.Boolean, nullable=False),
        sa.Column("inhibited", sa.Boolean, nullable=False),
    )
    op.create_table(
        "alerts_tasks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(40), nullable=False, unique=True),
        sa.Column("district", sa.String(64), nullable=False, index=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("assignee", sa.String(128)),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("due_at", _ts, nullable=False),
        sa.Column("claimed_at", _ts), sa.Column("closed_at", _ts),
        sa.Column("alert_resolved_at", _ts),
        sa.Column("finding", sa.Text),
        sa.Column("evidence", sa.Text),
        sa.Column("escalated_at", _ts),
    )
    op.create_table(
        "alerts_task_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("alerts_tasks.id"), nullable=False, index=True),
        sa.Column("at", _ts, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_table(
        "alerts_silences",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("site_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64)), sa.Column("rule_id", sa.String(64)),
        sa.Column("starts", _ts, nullable=False), sa.Column("ends", _ts, nullable=False),
        sa.Column("reason", sa.Text, nullable=False), sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "alerts_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("idem_key", sa.String(80), nullable=False, unique=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False, index=True),
        sa.Column("alert_id", sa.String(40)),
        sa.Column("task_id", sa.Integer),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("next_attempt_at", _ts, nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", _ts),
    )


def downgrade() -> None:
    """Drop the five tables (and every row in them)."""
    for name in ("alerts_outbox", "alerts_silences", "alerts_task_audit", "alerts_tasks", "alerts_alerts"):
        op.drop_table(name)
