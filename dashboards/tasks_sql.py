"""SQL of the task panels, against the inspection-task table the alerts stage creates.

The table and column names are the alerts stage's (``alerts/store.py``, table
``alerts_tasks``); dashboards do not import that stage, so they are spelt here and a test
creates the real tables with the alerts stage's own code, then runs every panel's SQL on them.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CLOSED_STATUS", "TASKS_TABLE", "open_tasks", "overdue_count", "tasks_by_status"]

TASKS_TABLE: Final = "alerts_tasks"
# A task is waiting for someone until it is closed with a finding (处置闭环).
CLOSED_STATUS: Final = "closed"


def tasks_by_status() -> str:
    """Number of tasks per status."""
    return f"SELECT status, COUNT(*) AS tasks FROM {TASKS_TABLE} GROUP BY status ORDER BY status"


def overdue_count() -> str:
    """Tasks not closed and past their due time at the end of the range."""
    return (
        f"SELECT COUNT(*) AS overdue FROM {TASKS_TABLE} "
        f"WHERE status <> '{CLOSED_STATUS}' AND due_at < $__timeTo()"
    )


def open_tasks() -> str:
    """The task list of the range, newest first."""
    return (
        f"SELECT id, title, district, site_id, severity, status, assignee, created_at, due_at "
        f"FROM {TASKS_TABLE} WHERE $__timeFilter(created_at) ORDER BY created_at DESC LIMIT 500"
    )
