"""Unknown user names lock like known ones, and no flood of other names makes the server forget.

An attacker who locks a name with wrong passwords, then tries many other names, must not find
the name unlocked (or its count reset) if it does not exist while a real account stays locked:
that difference would tell which names exist. Real database (SQLite), real argon2id (with cheap
parameters, so that ten thousand logins take seconds; the work per login is not what is tested).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from argon2 import PasswordHasher

from alerts.accounts import Accounts, LoginRefused, Role
from alerts.store import Store

NOW = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
FLOOD = 10_001  # more names than the former memory held (10,000), one wrong password each


def refusal(accounts: Accounts, username: str) -> tuple[str, int]:
    with pytest.raises(LoginRefused) as refused:
        accounts.login(username, "wrong-password-1")
    return refused.value.reason, refused.value.retry_after_s


def test_a_flood_of_names_does_not_tell_unknown_names_from_known_ones(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    accounts = Accounts(store.engine, max_failed=5, lockout_s=900, now=lambda: NOW,
                        hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    for name in ("wang", "liu"):
        accounts.add(name, name="王建国", phone="", team="", districts=["chengguan"], role=Role.INSPECTOR,
                     password="correct-horse-7")
    # A known and an unknown name locked (5 wrong); another pair at 4 wrong, one short of a lock.
    for _ in range(5):
        known_locked, unknown_locked = refusal(accounts, "wang"), refusal(accounts, "nobody-a")
        assert known_locked == unknown_locked
    assert known_locked[0] == "locked"
    for _ in range(4):
        assert refusal(accounts, "liu") == refusal(accounts, "nobody-b") == ("wrong_password", 0)

    for i in range(FLOOD):
        refusal(accounts, f"flood-{i:05d}")

    # Still locked, both, with the same wait; and the 5th wrong password locks both.
    assert refusal(accounts, "wang") == refusal(accounts, "nobody-a") == ("locked", 901)
    assert refusal(accounts, "liu")[0] == refusal(accounts, "nobody-b")[0] == "locked"
    store.close()
