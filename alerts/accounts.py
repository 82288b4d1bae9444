"""Accounts of the task API: who acted, proven by a password and short-lived tokens.

Each person who works tasks (an inspector, the duty desk, a supervisor) has an account in the
tasks database: user name, name, phone, team, districts and role, and an argon2id password
hash (argon2-cffi). Logging in gives a pair of opaque random tokens: an **access** token (valid
``api_access_ttl_s``, 15 minutes by default) sent as ``Authorization: Bearer`` on every call, and
a **refresh** token (``api_refresh_ttl_s``, 12 hours) that buys a new pair once and is then
spent. Only their SHA-256 is stored, so the database alone cannot act as anyone. Logging out,
disabling the account and resetting its password revoke its tokens; a spent refresh token that
comes back (stolen and replayed) revokes its whole login.

``api_max_failed_logins`` wrong passwords in a row lock the account for ``api_lockout_s``;
user names that do not exist are counted and locked the same way, in memory (:class:`_UnknownNames`:
a fixed set of counters that forgets nothing while the process runs), so an attacker cannot tell
them apart by the answers.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from alerts.store import account_tokens_table, accounts_table
from weijian.contract import is_identifier

_IDENTIFIER_RULE: Final = "1-64 characters of [a-z0-9_-] starting with a letter or digit"

__all__ = ["Account", "AccountError", "Accounts", "LoginRefused", "Role", "TokenPair", "valid_username"]

_USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # always fullmatch
_PHONE = re.compile(r"\+?[0-9]{5,19}")  # always fullmatch
MIN_PASSWORD = 8
# Counters for user names that do not exist: 2**20 of them take 9 MiB (a byte of failures and
# eight of lock time each), a fraction of one argon2id verification's 64 MiB.
UNKNOWN_NAME_COUNTERS: Final = 1 << 20
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


class Role(StrEnum):
    """What an account may do (docs/alerts.md, "Accounts")."""

    INSPECTOR = "inspector"  # claims and closes tasks of its districts
    DUTY_DESK = "duty_desk"  # sees all open tasks of its districts, reassigns, may claim and close
    SUPERVISOR = "supervisor"  # reads and exports; reassigns


class AccountError(ValueError):
    """A bad account operation (unknown user, name taken, weak password), with its reason."""


@dataclass(frozen=True)
class Account:
    """One account as the API sees it (never the hash)."""

    id: int
    username: str
    name: str
    phone: str
    team: str
    districts: tuple[str, ...]
    role: Role
    disabled: bool

    def as_dict(self) -> dict[str, Any]:
        """What ``GET /me`` shows."""
        return {"username": self.username, "name": self.name, "phone": self.phone, "team": self.team,
                "districts": list(self.districts), "role": self.role.value, "disabled": self.disabled}


@dataclass(frozen=True)
class TokenPair:
    """What a login or a refresh gives."""

    access_token: str
    refresh_token: str
    access_expires_at: datetime
    refresh_expires_at: datetime


class LoginRefused(Exception):
    """A login or refresh that did not succeed: ``reason`` and, when locked, the wait."""

    def __init__(self, reason: str, retry_after_s: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason  # wrong_password, disabled, locked, bad_token
        self.retry_after_s = retry_after_s


def valid_username(name: str) -> bool:
    """1-64 characters of ``a-z 0-9 _ . -``, starting with a letter or digit.

    Nothing else, not even a trailing newline (``fullmatch``: ``$`` also matches before one).
    """
    return _USERNAME.fullmatch(name) is not None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class _UnknownNames:
    """Failed logins of user names that do not exist, kept as an account row keeps them.

    Each name has one of ``counters`` counters (failures in a row, locked until), chosen by a
    keyed hash (BLAKE2b, a random key per process). The memory is fixed and nothing is evicted,
    so trying other names, however many, cannot reset a name's count or lift its lock, as it
    cannot for an account. Names that share a counter share its count: one may lock before its
    own ``max_failed``-th wrong password. Without the key, finding a name that shares a given
    name's counter takes about ``counters`` guesses (a million logins, each an argon2id
    verification). A restart starts every count again.
    """

    def __init__(self, counters: int) -> None:
        self._key = secrets.token_bytes(32)
        self._failed = bytearray(counters)
        self._locked_until_us = array("q", bytes(8 * counters))  # microseconds since 1970; 0: never
        self._mutex = threading.Lock()

    def _slot(self, username: str) -> int:
        digest = hashlib.blake2b(username.encode(), key=self._key, digest_size=8).digest()
        return int.from_bytes(digest, "big") % len(self._failed)

    def locked_until(self, username: str, now: datetime) -> datetime | None:
        """When the name's lock ends, if it is locked at ``now``."""
        with self._mutex:
            until_us = self._locked_until_us[self._slot(username)]
        until = _EPOCH + until_us * _MICROSECOND
        return until if until > now else None

    def fail(self, username: str, now: datetime, max_failed: int,
             lockout: timedelta) -> tuple[datetime | None, bool]:
        """Count one wrong password.

        Returns:
            When the name's lock ends (None: not locked), and whether this attempt locked it.
            A name locked meanwhile (by another attempt) stays locked and this one is not
            counted, as a locked account's attempts are not.
        """
        with self._mutex:
            slot = self._slot(username)
            until = _EPOCH + self._locked_until_us[slot] * _MICROSECOND
            if until > now:
                return until, False
            failed = self._failed[slot] + 1
            if failed < max_failed:
                self._failed[slot] = failed
                return None, False
            until = now + lockout
            self._failed[slot] = 0  # as an account's row: the count starts again after the lock
            self._locked_until_us[slot] = (until - _EPOCH) // _MICROSECOND
            return until, True


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # SQLite gives naive UTC back
    return value


class Accounts:
    """Accounts and tokens over the tasks database's engine."""

    def __init__(self, engine: Engine, *, access_ttl_s: int = 900, refresh_ttl_s: int = 43_200,
                 max_failed: int = 5, lockout_s: int = 900,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 hasher: PasswordHasher | None = None) -> None:
        self.engine = engine
        self.access_ttl = timedelta(seconds=access_ttl_s)
        self.refresh_ttl = timedelta(seconds=refresh_ttl_s)
        self.max_failed = max_failed
        self.lockout = timedelta(seconds=lockout_s)
        self.now = now
        if not 1 <= max_failed <= 255:  # an unknown name's counter is one byte
            raise ValueError(f"max_failed {max_failed}: 1-255")
        self._hasher = hasher or PasswordHasher()
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))  # equal work for unknown names
        self._unknown = _UnknownNames(UNKNOWN_NAME_COUNTERS)

    # --- administration (weijian tasks user ...) -----------------------------------------------

    def add(self, username: str, *, name: str, phone: str, team: str, districts: list[str], role: Role,
            password: str) -> Account:
        """Create an account.

        Raises:
            AccountError: a bad user name, phone, district list or password, or the name is taken.
        """
        if not valid_username(username):
            raise AccountError(f"user name {username!r}: 1-64 characters of a-z 0-9 _ . - (lowercase), "
                               "starting with a letter or digit")
        if not 1 <= len(name) <= 64:
            raise AccountError("name: 1-64 characters")
        if phone and not _PHONE.fullmatch(phone):
            raise AccountError(f"phone {phone!r}: digits, optionally with a leading +")
        if not districts:
            raise AccountError("at least one district")
        for district in districts:
            if not is_identifier(district):
                raise AccountError(f"district {district!r}: {_IDENTIFIER_RULE}")
        self._check_password(password)
        now = self.now()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(accounts_table).values(
                    username=username, name=name, phone=phone, team=team[:64],
                    districts=json.dumps(sorted(set(districts))), role=role.value,
                    password_hash=self._hasher.hash(password), disabled=False, failed_logins=0,
                    locked_until=None, created_at=now, updated_at=now))
        except IntegrityError as exc:
            raise AccountError(f"user name {username!r} is taken") from exc
        account = self.get(username)
        assert account is not None
        return account

    def get(self, username: str) -> Account | None:
        """The account of that user name, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(_by_name(username)).mappings().first()
        return _account(row) if row is not None else None

    def list(self) -> list[Account]:
        """Every account, by user name."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(accounts_table).order_by(accounts_table.c.username)).mappings().all()
        return [_account(r) for r in rows]

    def set_disabled(self, username: str, disabled: bool) -> Account:
        """Disable (and log out everywhere) or enable an account.

        Raises:
            AccountError: no such account.
        """
        with self.engine.begin() as conn:
            row = self._row(conn, username)
            conn.execute(update(accounts_table).where(accounts_table.c.id == row["id"])
                         .values(disabled=disabled, updated_at=self.now()))
            if disabled:
                self._revoke(conn, account_id=row["id"])
        account = self.get(username)
        assert account is not None
        return account

    def reset(self, username: str, password: str) -> None:
        """A new password; unlocks the account and logs it out everywhere.

        Raises:
            AccountError: no such account, or a weak password.
        """
        self._check_password(password)
        with self.engine.begin() as conn:
            row = self._row(conn, username)
            conn.execute(update(accounts_table).where(accounts_table.c.id == row["id"]).values(
                password_hash=self._hasher.hash(password), failed_logins=0, locked_until=None,
                updated_at=self.now()))
            self._revoke(conn, account_id=row["id"])

    # --- the API ---------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> tuple[Account, TokenPair]:
        """Check the password and open a login.

        Raises:
            LoginRefused: ``locked`` (with the wait), ``wrong_password`` (also for an unknown
                user name), or ``disabled`` (the password was right).
        """
        now = self.now()
        refused: LoginRefused | None = None
        with self.engine.begin() as conn:  # a failure is counted (committed) before it is raised
            row = conn.execute(_by_name(username).with_for_update()).mappings().first()
            if row is None:
                refused = self._unknown_attempt(username, now, password)
            elif (locked := _aware(row["locked_until"])) is not None and locked > now:
                refused = LoginRefused("locked", int((locked - now).total_seconds()) + 1)
            elif not self._verify(row["password_hash"], password):
                failed = row["failed_logins"] + 1
                lock = now + self.lockout if failed >= self.max_failed else None
                conn.execute(update(accounts_table).where(accounts_table.c.id == row["id"]).values(
                    failed_logins=0 if lock else failed, locked_until=lock))
                refused = (LoginRefused("locked", int(self.lockout.total_seconds())) if lock
                           else LoginRefused("wrong_password"))
            elif row["disabled"]:
                refused = LoginRefused("disabled")
            else:
                conn.execute(update(accounts_table).where(accounts_table.c.id == row["id"])
                             .values(failed_logins=0, locked_until=None))
                pair = self._issue(conn, row["id"], secrets.token_hex(16), now)
        if refused is not None:
            raise refused
        assert row is not None
        return _account(row), pair

    def authenticate(self, access_token: str) -> Account | None:
        """The account an access token belongs to, if it is valid, unexpired and unrevoked."""
        now = self.now()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(accounts_table, account_tokens_table.c.expires_at, account_tokens_table.c.revoked_at)
                .join(account_tokens_table, account_tokens_table.c.account_id == accounts_table.c.id)
                .where(account_tokens_table.c.token_hash == _digest(access_token),
                       account_tokens_table.c.kind == "access")
            ).mappings().first()
        if row is None or row["revoked_at"] is not None or row["disabled"]:
            return None
        expires = _aware(row["expires_at"])
        if expires is None or expires <= now:
            return None
        return _account(row)

    def refresh(self, refresh_token: str) -> tuple[Account, TokenPair]:
        """Spend a refresh token for a new pair in the same login.

        Raises:
            LoginRefused: ``bad_token`` (unknown, expired, revoked or spent: a spent one also
                revokes the whole login), or ``disabled``.
        """
        now = self.now()
        with self.engine.begin() as conn:
            token = conn.execute(select(account_tokens_table).where(
                account_tokens_table.c.token_hash == _digest(refresh_token),
                account_tokens_table.c.kind == "refresh").with_for_update()).mappings().first()
            if token is None:
                raise LoginRefused("bad_token")
            if token["revoked_at"] is not None:  # spent or revoked, and back: a replay ends that login
                self._revoke(conn, session_id=token["session_id"])
        with self.engine.begin() as conn:
            token = conn.execute(select(account_tokens_table).where(
                account_tokens_table.c.token_hash == _digest(refresh_token)).with_for_update()
            ).mappings().one()
            if token["revoked_at"] is not None:
                raise LoginRefused("bad_token")
            expires = _aware(token["expires_at"])
            if expires is None or expires <= now:
                raise LoginRefused("bad_token")
            row = conn.execute(select(accounts_table).where(accounts_table.c.id == token["account_id"])
                               ).mappings().one()
            if row["disabled"]:
                raise LoginRefused("disabled")
            conn.execute(update(account_tokens_table)
                         .where(account_tokens_table.c.token_hash == token["token_hash"])
                         .values(revoked_at=now))
            # The old access token of this login ends with its refresh token.
            conn.execute(update(account_tokens_table).where(
                account_tokens_table.c.session_id == token["session_id"],
                account_tokens_table.c.kind == "access", account_tokens_table.c.revoked_at.is_(None),
            ).values(revoked_at=now))
            pair = self._issue(conn, row["id"], token["session_id"], now)
        return _account(row), pair

    def logout(self, access_token: str) -> bool:
        """Revoke the login of this access token (both of its tokens). False if it was unknown."""
        with self.engine.begin() as conn:
            token = conn.execute(select(account_tokens_table).where(
                account_tokens_table.c.token_hash == _digest(access_token))).mappings().first()
            if token is None:
                return False
            self._revoke(conn, session_id=token["session_id"])
        return True

    # --- internals -------------------------------------------------------------------------------

    def _check_password(self, password: str) -> None:
        if len(password) < MIN_PASSWORD or len(password) > 256:
            raise AccountError(f"a password has {MIN_PASSWORD}-256 characters")

    def _row(self, conn: Any, username: str) -> Any:
        row = conn.execute(_by_name(username)).mappings().first()
        if row is None:
            raise AccountError(f"no account {username!r}")
        return row

    def _issue(self, conn: Any, account_id: int, session_id: str, now: datetime) -> TokenPair:
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        pair = TokenPair(access, refresh, now + self.access_ttl, now + self.refresh_ttl)
        conn.execute(insert(account_tokens_table), [
            {"token_hash": _digest(access), "account_id": account_id, "session_id": session_id,
             "kind": "access", "created_at": now, "expires_at": pair.access_expires_at, "revoked_at": None},
            {"token_hash": _digest(refresh), "account_id": account_id, "session_id": session_id,
             "kind": "refresh", "created_at": now, "expires_at": pair.refresh_expires_at, "revoked_at": None},
        ])
        return pair

    def _revoke(self, conn: Any, *, account_id: int | None = None, session_id: str | None = None) -> None:
        query = update(account_tokens_table).where(account_tokens_table.c.revoked_at.is_(None))
        if account_id is not None:
            query = query.where(account_tokens_table.c.account_id == account_id)
        if session_id is not None:
            query = query.where(account_tokens_table.c.session_id == session_id)
        conn.execute(query.values(revoked_at=self.now()))

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self._hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False

    def _unknown_attempt(self, username: str, now: datetime, password: str) -> LoginRefused:
        """An unknown user name: the same work, answers and lockout as a known one."""
        locked = self._unknown.locked_until(username, now)
        if locked is not None:
            return LoginRefused("locked", int((locked - now).total_seconds()) + 1)
        self._verify(self._dummy, password)
        locked, by_this_attempt = self._unknown.fail(username, now, self.max_failed, self.lockout)
        if locked is None:
            return LoginRefused("wrong_password")
        if by_this_attempt:
            return LoginRefused("locked", int(self.lockout.total_seconds()))
        return LoginRefused("locked", int((locked - now).total_seconds()) + 1)


def _by_name(username: str) -> Any:
    return select(accounts_table).where(accounts_table.c.username == username)


def _account(row: Any) -> Account:
    return Account(id=row["id"], username=row["username"], name=row["name"], phone=row["phone"],
                   team=row["team"], districts=tuple(json.loads(row["districts"])), role=Role(row["role"]),
                   disabled=bool(row["disabled"]))
