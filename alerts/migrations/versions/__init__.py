"""Alembic revisions of the alerts database, oldest first (``down_revision`` chains them)."""
