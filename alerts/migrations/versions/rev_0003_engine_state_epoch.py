"""0003: an epoch per engine state, the fencing token of a partition's holder.

A process that takes a partition over increments the epoch of its state row before loading
the partition's alerts and state; every later write of the partition's engine is conditional
on the epoch it got. A former holder that still has a write in flight (its lock connection
dropped, another process took over) therefore finds the row moved on and writes nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``alerts_engine_state.epoch`` (0 for rows written before)."""
    op.add_column("alerts_engine_state",
                  sa.Column("epoch", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    """Drop it again."""
    with op.batch_alter_table("alerts_engine_state") as batch:
        batch.drop_column("epoch")
