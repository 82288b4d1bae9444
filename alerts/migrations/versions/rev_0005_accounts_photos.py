"""0005: inspectors' accounts, their tokens, and the photos a closed task keeps.

``alerts_accounts`` holds who may use the task API and its app by name (inspector, duty desk,
supervisor), with an argon2id password hash and the count of failed logins in a row;
``alerts_account_tokens`` the access and refresh tokens of each login, by SHA-256 (a token is
never stored); ``alerts_task_photos`` the evidence photos, with their SHA-256, size and type.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the three tables."""
    op.create_table(
        "alerts_accounts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("districts", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False),
        sa.Column("locked_until", _ts),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("updated_at", _ts, nullable=False),
    )
    op.create_table(
        "alerts_account_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("alerts_accounts.id"), nullable=False),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("expires_at", _ts, nullable=False),
        sa.Column("revoked_at", _ts),
    )
    op.create_index("ix_alerts_account_tokens_account_id", "alerts_account_tokens", ["account_id"])
    op.create_index("ix_alerts_account_tokens_session_id", "alerts_account_tokens", ["session_id"])
    op.create_table(
        "alerts_task_photos",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("alerts_tasks.id"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("uploaded_by", sa.String(128), nullable=False),
        sa.Column("uploaded_at", _ts, nullable=False),
    )
    op.create_index("ix_alerts_task_photos_task_id", "alerts_task_photos", ["task_id"])


def downgrade() -> None:
    """Drop them."""
    op.drop_table("alerts_task_photos")
    op.drop_table("alerts_account_tokens")
    op.drop_table("alerts_accounts")
