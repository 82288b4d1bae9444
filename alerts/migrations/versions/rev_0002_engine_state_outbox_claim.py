"""0002: the engine's persisted state, and outbox claims.

``alerts_engine_state`` keeps one JSON document per key (the engine's partition state, written
in the same transaction as the alert changes it explains). ``claimed_by`` / ``claimed_at`` on
the outbox record which worker took an item to send (status ``sending``), so two workers never
send the same notification and a dead worker's claim can be taken over after its lease.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``alerts_engine_state`` and the outbox claim columns; existing rows are unclaimed."""
    op.create_table(
        "alerts_engine_state",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("alerts_outbox", sa.Column("claimed_by", sa.String(64), nullable=True))
    op.add_column("alerts_outbox", sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop them again; items still ``sending`` are lost to the old code, so settle them first."""
    with op.batch_alter_table("alerts_outbox") as batch:  # SQLite needs the table copy
        batch.drop_column("claimed_at")
        batch.drop_column("claimed_by")
    op.drop_table("alerts_engine_state")
