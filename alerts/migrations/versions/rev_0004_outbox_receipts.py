"""0004: what an SMS provider said about a message: its id for it, and the delivery receipt.

Aliyun answers a SendSms with a ``BizId`` and Tencent Cloud with a ``SerialNo``; their delivery
receipts (pushed to the task API) name that id, so ``provider_ref`` is how a receipt finds its
row. ``receipt`` is the outcome (``DELIVERED``, or the provider's error code) and ``receipt_at``
when the handset got it (or the provider gave up).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``provider_ref``, ``receipt`` and ``receipt_at`` to ``alerts_outbox``."""
    op.add_column("alerts_outbox", sa.Column("provider_ref", sa.String(64), nullable=True))
    op.add_column("alerts_outbox", sa.Column("receipt", sa.String(64), nullable=True))
    op.add_column("alerts_outbox", sa.Column("receipt_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_alerts_outbox_provider_ref", "alerts_outbox", ["provider_ref"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_alerts_outbox_provider_ref", "alerts_outbox")
    with op.batch_alter_table("alerts_outbox") as batch:
        batch.drop_column("receipt_at")
        batch.drop_column("receipt")
        batch.drop_column("provider_ref")
