"""The inspection-task HTTP API and the inspectors' mobile web app (FastAPI).

Two kinds of callers, both with ``Authorization: Bearer <token>``:

- **accounts** (inspectors, the duty desk, supervisors; :mod:`alerts.accounts`): a short-lived
  access token from ``POST /auth/login``; every action is recorded in the task's audit trail
  under the account's user name;
- **team tokens** (``[[alerts.teams]]``) for machine clients; their actions are recorded as
  ``team:<team name>`` (with the ``X-Inspector`` header or the assignee, when given).

A caller sees only the tasks of its districts: another district's task answers 404, exactly as
an unknown id. Every input is bounded (ids 1..2^31-1, lengths, no control characters) and every
answer the API can give is in the OpenAPI document (``/openapi.json``, interactive at
``/docs``). Credentials are refused over plain HTTP from an address other than loopback
(403), unless a trusted proxy says the client used HTTPS (``X-Forwarded-Proto``). The web app
(Simplified Chinese, for a phone's browser) is served under ``/app/``.
"""

# No "from __future__ import annotations": FastAPI must see the local dependency types.
import asyncio
import hashlib
import hmac
import io
import ipaddress
import json
import unicodedata
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Header, HTTPException, Path, Query, Request, UploadFile
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from alerts.accounts import Account, Accounts, LoginRefused, Role
from alerts.api_findings import FINDINGS
from alerts.store import Store, TasksDbUnavailable, TaskStatus
from weijian.config import AlertTeam, InfluxSettings
from weijian.contract import CATALOGUE
from weijian.errors import InfluxUnavailable
from weijian.registry import Registry
from weijian.rules import RulePack

__all__ = ["FINDINGS", "ApiOptions", "CloseRequest", "build_app", "is_loopback"]

_bearer = HTTPBearer(auto_error=False)
_CHINA = timezone(timedelta(hours=8))
MAX_ID = 2**31 - 1  # the tasks table's id is a 32-bit integer on PostgreSQL


def _is_control(char: str) -> bool:
    """Unicode category Cc: U+0000-U+001F, U+007F and the C1 block U+0080-U+009F."""
    return unicodedata.category(char) == "Cc"


def _clean(value: str, *, multiline: bool = False) -> str:
    """No NUL or other control characters (newlines and tabs in free text), and valid UTF-8."""
    allowed = "\n\r\t" if multiline else ""
    if any(_is_control(c) and c not in allowed for c in value):
        raise ValueError("control characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("not valid Unicode text") from exc
    return value


def _line(value: str) -> str:
    return _clean(value)


def _text(value: str) -> str:
    return _clean(value, multiline=True)


# The patterns put the rule in the OpenAPI document; the validators also refuse text that is
# not valid Unicode (a lone surrogate), which no pattern can say.
# Category Cc is exactly U+0000-U+001F and U+007F-U+009F (C1 included).
Line = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f-\x9f]*$"), AfterValidator(_line)]
Text = Annotated[str, Field(pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"), AfterValidator(_text)]
# X-Inspector as its sender wrote it (UTF-8, see _header_text): the document gives this rule and
# caller() checks it on the decoded text, since the raw header holds UTF-8 bytes 0x80-0x9f of
# ordinary Chinese names.
_HEADER_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="task id")]


# The fixed list of findings (处置结论), codes as in alerts/api_findings.py.
Finding = StrEnum("Finding", {code: code for code in FINDINGS})  # type: ignore[misc]


Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]


class Evidence(BaseModel):
    """What an inspector brings back from the site."""

    photos: list[Annotated[Line, Field(min_length=1, max_length=512)]] = Field(
        default_factory=list, max_length=20,
        description="photo references: the SHA-256 of photos uploaded to the task, or URLs / object keys")
    gps: tuple[Latitude, Longitude] | None = Field(None, description="latitude, longitude (WGS 84)")
    gps_accuracy_m: Annotated[float, Field(ge=0, le=100_000)] | None = None
    gps_at: datetime | None = Field(None, description="when the phone took the position")
    on_site_from: datetime | None = None
    on_site_to: datetime | None = None


class CloseRequest(BaseModel):
    """Closing a task: the finding (处置结论) and the evidence."""

    finding: Annotated[Text, Field(min_length=1, max_length=2000)] = Field(
        description="the finding in words (free text)")
    finding_code: Finding | None = Field(None, description="the finding from the fixed list")
    evidence: Evidence = Evidence()


class ClaimRequest(BaseModel):
    """Claiming a task: who takes it (team tokens; an account claims for itself)."""

    assignee: Annotated[Line, Field(min_length=1, max_length=64)] | None = None


class ReassignRequest(BaseModel):
    """Giving a task to an inspector (duty desk and supervisors)."""

    assignee: Annotated[Line, Field(min_length=1, max_length=64)]


class LoginRequest(BaseModel):
    """A user name and password."""

    username: Annotated[Line, Field(min_length=1, max_length=64)]
    password: Annotated[Line, Field(min_length=1, max_length=256)]


class RefreshRequest(BaseModel):
    """A refresh token from the last login or refresh."""

    refresh_token: Annotated[Line, Field(min_length=1, max_length=128)]


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer but 422."""

    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text_of = {400: "bad request", 401: "no valid token (or wrong password)",
               403: "not allowed for this caller",
               404: "no such task (or another district's)", 409: "the task is not in a state for this",
               413: "the photo is too large", 415: "not a JPEG, PNG or WebP photo",
               429: "too many failed logins: locked for a while (Retry-After)",
               503: "the tasks database (or InfluxDB, for readings) is unavailable; try again"}
    return {c: {"model": ErrorBody, "description": text_of[c]} for c in codes}


def _header_text(value: str | None) -> str | None:
    """A header as its sender wrote it: HTTP hands headers over as Latin-1, clients send UTF-8."""
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


@dataclass(frozen=True)
class Caller:
    """Who is calling: an account, or a team token."""

    districts: tuple[str, ...]
    account: Account | None = None
    team: AlertTeam | None = None
    inspector: str | None = None  # X-Inspector, with a team token

    @property
    def actor(self) -> str:
        """How the audit trail names the caller."""
        if self.account is not None:
            return self.account.username
        assert self.team is not None
        return f"team:{self.team.name}" + (f" ({self.inspector})" if self.inspector else "")

    @property
    def role(self) -> str:
        return self.account.role.value if self.account is not None else "team"


@dataclass(frozen=True)
class ApiOptions:
    """What the API needs besides the store: accounts, limits, and where readings are."""

    accounts: Accounts | None = None
    receipt_token: str | None = None
    influx: InfluxSettings | None = None
    registry: Registry | None = None
    rule_packs: dict[Any, RulePack] | None = None
    trusted_proxies: tuple[str, ...] = ()
    photo_max_bytes: int = 5 * 1024 * 1024
    photos_per_task: int = 10


_MAGIC = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}


def _media_type(data: bytes) -> str | None:
    """The photo's type from its first bytes (never from the name or the header the phone sent)."""
    for magic, media in _MAGIC.items():
        if data.startswith(magic):
            return media
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address, or ``localhost``) is this machine's loopback."""
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_app(store: Store, teams: list[AlertTeam], receipt_token: str | None = None,
              options: ApiOptions | None = None) -> FastAPI:
    """The API application over ``store``.

    ``teams`` authorise machine clients; ``options.accounts`` the inspectors' logins. With
    ``receipt_token`` (``[sms] receipt_token``) it also takes the SMS providers' delivery
    receipts at ``POST /sms/receipts/aliyun`` and ``/sms/receipts/tencent`` (``?token=...``).
    """
    opts = options or ApiOptions(receipt_token=receipt_token)
    receipt_token = receipt_token or opts.receipt_token
    accounts = opts.accounts
    app = FastAPI(title="weijian inspection tasks", version="2",
                  responses={400: {"model": ErrorBody, "description": "a body that cannot be parsed"},
                             403: {"model": ErrorBody,
                                   "description": "credentials over plain HTTP from off loopback (or the "
                                                  "caller's role may not do this)"}},
                  description="巡查核查任务: log in, list, show, claim, reassign and close inspection tasks, "
                              "with photos and positions; the mobile web app is at /app/.")

    # The database down is the API's degraded state, not a crash: 503 with Retry-After, and
    # the request can be repeated (a claim or close that failed was not committed).
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "the tasks database is unavailable; try again"}, status_code=503,
                            headers={"Retry-After": "5"})

    app.add_exception_handler(SQLAlchemyError, unavailable)
    app.add_exception_handler(TasksDbUnavailable, unavailable)

    # A body that is not JSON at all is 400, as documented; a JSON body that breaks the schema
    # stays FastAPI's 422 with the field named.
    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return JSONResponse({"detail": "the body cannot be parsed as JSON"}, status_code=400)
        return await request_validation_exception_handler(request, exc)

    app.add_exception_handler(RequestValidationError, invalid)

    @app.middleware("http")
    async def https_only(request: Request, call_next: Any) -> Any:
        """Credentials never over plain HTTP across the network."""
        peer = request.client.host if request.client else None
        secure = request.url.scheme == "https" or is_loopback(peer) or (
            peer in opts.trusted_proxies and request.headers.get("x-forwarded-proto") == "https")
        carries = ("authorization" in request.headers or request.url.path.startswith("/auth/")
                   or request.url.path.startswith("/sms/receipts/"))
        if carries and not secure:
            return JSONResponse({"detail": "HTTPS required: credentials are refused over plain HTTP"},
                                status_code=403)
        return await call_next(request)

    @app.get("/healthz", responses={503: {"description": "the tasks database is unavailable"}})
    async def healthz() -> JSONResponse:
        def ping() -> None:
            with store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await asyncio.to_thread(ping)
        except SQLAlchemyError:
            return JSONResponse({"ok": False, "database": "unavailable"}, status_code=503)
        return JSONResponse({"ok": True, "database": "ok"})

    # --- who is calling ------------------------------------------------------------------------

    async def caller(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        x_inspector: Annotated[str | None, Header(
            max_length=60, json_schema_extra={"pattern": _HEADER_PATTERN},
            description="who acts, with a team token")] = None,
    ) -> Caller:
        inspector = _header_text(x_inspector)
        if inspector is not None and (not inspector or any(_is_control(c) for c in inspector)):
            raise RequestValidationError([{
                "type": "string_pattern_mismatch", "loc": ("header", "x-inspector"),
                "msg": "no control characters (X-Inspector is a person's name)", "input": inspector,
                "ctx": {"pattern": _HEADER_PATTERN}}])
        if creds is None:
            raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
        token = creds.credentials
        if len(token) > 256:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        for t in teams:
            if hmac.compare_digest(t.token.get_secret_value().encode(), token.encode()):
                return Caller(districts=tuple(t.districts), team=t, inspector=inspector)
        if accounts is not None:
            account = await asyncio.to_thread(accounts.authenticate, token)
            if account is not None:
                return Caller(districts=account.districts, account=account)
        raise HTTPException(401, "unknown, expired or revoked token", headers={"WWW-Authenticate": "Bearer"})

    Who = Annotated[Caller, Depends(caller)]

    def require(who: Caller, *roles: str) -> None:
        if who.role not in roles:
            raise HTTPException(403, f"not allowed for role {who.role}")

    async def visible(task_id: int, who: Caller) -> dict[str, Any]:
        task = await asyncio.to_thread(store.task, task_id)
        if task is None or task["district"] not in who.districts:
            raise HTTPException(404, f"no task {task_id}")
        return task

    def shown(task: dict[str, Any]) -> dict[str, Any]:
        site = opts.registry.sites.get(task["site_id"]) if opts.registry else None
        if site is not None:
            task["site"] = {"name": site.name, "address": site.address, "kind": site.kind.value,
                            "map_url": "https://uri.amap.com/search?keyword=" + quote(site.address)}
        return task

    # --- logging in ----------------------------------------------------------------------------

    def tokens(account: Account, pair: Any) -> dict[str, Any]:
        assert accounts is not None
        # The configured lifetimes as issued (pair's expiries = the issuing now + these), not
        # recomputed from a later clock reading, which would answer a second short.
        return {"access_token": pair.access_token, "refresh_token": pair.refresh_token,
                "token_type": "bearer",
                "expires_in": int(accounts.access_ttl.total_seconds()),
                "refresh_expires_in": int(accounts.refresh_ttl.total_seconds()),
                "account": account.as_dict()}

    def refused(exc: LoginRefused) -> HTTPException:
        if exc.reason == "locked":
            return HTTPException(429, "too many failed logins; try again later",
                                 headers={"Retry-After": str(exc.retry_after_s)})
        if exc.reason == "disabled":
            return HTTPException(403, "this account is disabled")
        return HTTPException(401, "wrong user name or password" if exc.reason == "wrong_password"
                             else "unknown, expired or spent refresh token")

    @app.post("/auth/login", responses=_errors(401, 403, 429, 503))
    async def login(body: LoginRequest) -> dict[str, Any]:
        """Log in with a password: an access token (short-lived) and a refresh token."""
        if accounts is None:
            raise HTTPException(401, "wrong user name or password")
        try:
            account, pair = await asyncio.to_thread(accounts.login, body.username, body.password)
        except LoginRefused as exc:
            raise refused(exc) from None
        return tokens(account, pair)

    @app.post("/auth/refresh", responses=_errors(401, 403, 503))
    async def refresh(body: RefreshRequest) -> dict[str, Any]:
        """Spend the refresh token for a new pair (the old access token ends with it)."""
        if accounts is None:
            raise HTTPException(401, "unknown, expired or spent refresh token")
        try:
            account, pair = await asyncio.to_thread(accounts.refresh, body.refresh_token)
        except LoginRefused as exc:
            raise refused(exc) from None
        return tokens(account, pair)

    @app.post("/auth/logout", responses=_errors(401, 503))
    async def logout(who: Who, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
                     ) -> dict[str, Any]:
        """End this login: its access and refresh tokens are revoked."""
        if who.account is not None and accounts is not None and creds is not None:
            await asyncio.to_thread(accounts.logout, creds.credentials)
        return {"ok": True}

    @app.get("/me", responses=_errors(401, 503))
    async def me(who: Who) -> dict[str, Any]:
        """The caller: its account, or the team of a team token."""
        if who.account is not None:
            return who.account.as_dict()
        assert who.team is not None
        return {"team": who.team.name, "districts": list(who.districts), "role": "team"}

    # --- tasks ---------------------------------------------------------------------------------

    @app.get("/tasks", responses=_errors(401, 503))
    async def list_tasks(
        who: Who, status: TaskStatus | None = None,
        mine: Annotated[bool, Query(description="only the caller's tasks (accounts)")] = False,
    ) -> list[dict[str, Any]]:
        """The caller's districts' tasks, newest first (at most 500)."""
        assignee = who.account.username if mine and who.account is not None else None
        found = await asyncio.to_thread(store.tasks, districts=who.districts,
                                        status=status.value if status else None, assignee=assignee)
        return [shown(t) for t in found]

    @app.get("/desk/tasks", responses=_errors(401, 403, 503))
    async def desk_tasks(who: Who) -> list[dict[str, Any]]:
        """The duty desk's view: every task of its districts not yet closed, overdue first."""
        require(who, Role.DUTY_DESK.value, Role.SUPERVISOR.value, "team")
        return [shown(t) for t in await asyncio.to_thread(store.desk_tasks, who.districts)]

    @app.get("/accounts", responses=_errors(401, 403, 503))
    async def list_accounts(who: Who) -> list[dict[str, Any]]:
        """The enabled inspectors and duty desk of the caller's districts (to reassign to)."""
        require(who, Role.DUTY_DESK.value, Role.SUPERVISOR.value)
        assert accounts is not None
        every = await asyncio.to_thread(accounts.list)
        return [a.as_dict() for a in every if not a.disabled and a.role is not Role.SUPERVISOR
                and set(a.districts) & set(who.districts)]

    @app.get("/tasks/{task_id}", responses=_errors(401, 404, 503))
    async def show_task(task_id: TaskId, who: Who) -> dict[str, Any]:
        """One task with its audit trail, its photos and its site."""
        task = await visible(task_id, who)
        task["photos"] = await asyncio.to_thread(store.photos, task_id)
        return shown(task)

    @app.post("/tasks/{task_id}/claim", responses=_errors(400, 401, 403, 404, 409, 503))
    async def claim_task(task_id: TaskId, who: Who, body: ClaimRequest | None = None) -> dict[str, Any]:
        """Claim an open task (an account claims for itself); 409 if someone else was first."""
        await visible(task_id, who)
        if who.account is not None:
            require(who, Role.INSPECTOR.value, Role.DUTY_DESK.value)
            assignee, actor = who.account.username, None
        else:
            if body is None or body.assignee is None:
                raise HTTPException(400, "a team token names the assignee: {\"assignee\": ...}")
            assignee, actor = body.assignee, who.actor
        if not await asyncio.to_thread(store.claim, task_id, assignee, datetime.now(UTC), actor):
            raise HTTPException(409, f"task {task_id} is not open")
        return shown(await visible(task_id, who))

    @app.post("/tasks/{task_id}/reassign", responses=_errors(401, 403, 404, 409, 503))
    async def reassign_task(task_id: TaskId, body: ReassignRequest, who: Who) -> dict[str, Any]:
        """Give a task to an inspector of its district (duty desk, supervisors)."""
        require(who, Role.DUTY_DESK.value, Role.SUPERVISOR.value)
        task = await visible(task_id, who)
        assert accounts is not None
        target = await asyncio.to_thread(accounts.get, body.assignee)
        if target is None or target.disabled or task["district"] not in target.districts \
                or target.role is Role.SUPERVISOR:
            raise HTTPException(409, f"{body.assignee!r} is not an enabled inspector of district "
                                     f"{task['district']}")
        now = datetime.now(UTC)
        if not await asyncio.to_thread(store.reassign, task_id, target.username, who.actor, now):
            raise HTTPException(409, f"task {task_id} is closed")
        return shown(await visible(task_id, who))

    async def closable(task_id: int, who: Caller) -> dict[str, Any]:
        task = await visible(task_id, who)
        if who.account is not None:
            # A supervisor closes (and adds photos to) nothing, whatever the task's state: 403.
            require(who, Role.INSPECTOR.value, Role.DUTY_DESK.value)
        if task["status"] not in (TaskStatus.CLAIMED.value, TaskStatus.RESOLVED.value):
            raise HTTPException(409, f"task {task_id} is not claimed")  # before whose it is
        if who.account is not None and who.account.role is Role.INSPECTOR \
                and task["assignee"] != who.account.username:
            raise HTTPException(403, f"task {task_id} is not yours")
        return task

    @app.post("/tasks/{task_id}/photos", responses=_errors(401, 403, 404, 409, 413, 415, 503))
    async def add_photo(task_id: TaskId, who: Who,
                        photo: Annotated[UploadFile, File(description="a JPEG, PNG or WebP photo")],
                        ) -> dict[str, Any]:
        """Attach a photo to a claimed task: kept with its SHA-256 (the reference to close with)."""
        task = await closable(task_id, who)
        if task["status"] not in (TaskStatus.CLAIMED.value, TaskStatus.RESOLVED.value):
            raise HTTPException(409, f"task {task_id} is not claimed")
        data = await photo.read(opts.photo_max_bytes + 1)
        if len(data) > opts.photo_max_bytes:
            raise HTTPException(413, f"a photo has at most {opts.photo_max_bytes} bytes")
        media = _media_type(data)
        if media is None:
            raise HTTPException(415, "not a JPEG, PNG or WebP photo")
        digest = hashlib.sha256(data).hexdigest()
        if not await asyncio.to_thread(store.add_photo, task_id, sha256=digest, media_type=media, data=data,
                                       by=who.actor, now=datetime.now(UTC), max_photos=opts.photos_per_task):
            raise HTTPException(409, f"task {task_id} has {opts.photos_per_task} photos already")
        return {"sha256": digest, "media_type": media, "size": len(data)}

    @app.get("/tasks/{task_id}/photos/{sha256}", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}},
                              "description": "the photo"}, **_errors(401, 404, 503)})
    async def get_photo(task_id: TaskId, who: Who,
                        sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]) -> Response:
        """A photo of the task, as uploaded."""
        await visible(task_id, who)
        found = await asyncio.to_thread(store.photo, task_id, sha256)
        if found is None:
            raise HTTPException(404, "no such photo")
        return Response(found[1], media_type=found[0])

    @app.post("/tasks/{task_id}/close", responses=_errors(401, 403, 404, 409, 503))
    async def close_task(task_id: TaskId, body: CloseRequest, who: Who) -> dict[str, Any]:
        """Close a claimed task with a finding and evidence; 409 if it is not claimed."""
        await closable(task_id, who)
        evidence = body.evidence.model_dump(mode="json")
        if body.finding_code is not None:
            evidence["finding_code"] = body.finding_code.value
            evidence["finding_text"] = FINDINGS[body.finding_code.value]
        inspector = who.account is not None and who.account.role is Role.INSPECTOR
        mine = who.account.username if who.account is not None and inspector else None
        ok = await asyncio.to_thread(store.close_task, task_id, who.actor, body.finding, evidence,
                                     datetime.now(UTC), assignee=mine)
        if not ok:
            raise HTTPException(409, f"task {task_id} is not claimed")
        return shown(await visible(task_id, who))

    @app.get("/tasks/{task_id}/readings", responses=_errors(401, 404, 503))
    async def task_readings(task_id: TaskId, who: Who) -> dict[str, Any]:
        """The alert's metric around the alert (6 h before it to its end), for the task's chart."""
        task = await visible(task_id, who)
        alert = await asyncio.to_thread(store.alert, task["alert_id"])
        rule = None
        if alert is not None and opts.rule_packs is not None and alert.kind in opts.rule_packs:
            rule = next((r for r in opts.rule_packs[alert.kind].rules if r.id == alert.rule_id), None)
        if alert is None or rule is None or rule.metric is None or opts.influx is None:
            # Nothing to chart: every documented key all the same, null where not known.
            metric = rule.metric if rule is not None else None
            return {"metric": metric,
                    "unit": CATALOGUE[alert.kind].get(metric) if alert is not None and metric else None,
                    "title": rule.title if rule is not None else None,
                    "threshold": alert.threshold if alert is not None else None,
                    "since": alert.since if alert is not None else None, "points": []}
        from weijian.influxql import query, quote_ident, quote_string

        start = alert.since - timedelta(hours=6)
        end = (alert.resolved_at or datetime.now(UTC)) + timedelta(minutes=30)
        q = (f"SELECT {quote_ident(rule.metric)} FROM {quote_ident(alert.kind.value)} "
             f"WHERE site_id = {quote_string(alert.site_id)} AND device_id = {quote_string(alert.device_id)} "
             f"AND time >= '{start.isoformat()}' AND time <= '{end.isoformat()}' "
             "ORDER BY time DESC LIMIT 500")
        try:
            series = await query(opts.influx, q)
        except InfluxUnavailable as exc:
            raise HTTPException(503, f"InfluxDB is unavailable: {exc}") from None
        points = [[row[0], row[1]] for s in series for row in s["values"] if row[1] is not None]
        points.reverse()
        return {"metric": rule.metric, "unit": CATALOGUE[alert.kind].get(rule.metric), "title": rule.title,
                "threshold": alert.threshold, "since": alert.since, "points": points}

    @app.get("/tasks/{task_id}/evidence.zip", response_class=Response,
             responses={200: {"content": {"application/zip": {}}, "description": "the case file"},
                        **_errors(401, 404, 409, 503)})
    async def evidence_zip(task_id: TaskId, who: Who) -> Response:
        """A closed task's record for a case file: record.json, the photos and SHA256SUMS."""
        task = await visible(task_id, who)
        if task["status"] != TaskStatus.CLOSED.value:
            raise HTTPException(409, f"task {task_id} is not closed")
        photos = await asyncio.to_thread(store.photos, task_id)
        blobs = [await asyncio.to_thread(store.photo, task_id, p["sha256"]) for p in photos]
        return Response(_case_file(shown(task), photos, blobs), media_type="application/zip",
                        headers={"Content-Disposition":
                                 f'attachment; filename="task-{task_id}-evidence.zip"'})

    # --- SMS delivery receipts -------------------------------------------------------------------

    def receipts_allowed(token: Annotated[str, Query(max_length=256)] = "") -> None:
        if not receipt_token or not hmac.compare_digest(token.encode(), receipt_token.encode()):
            raise HTTPException(404, "not found")  # receipts off, or a caller without the token

    Receipts = Annotated[None, Depends(receipts_allowed)]

    @app.post("/sms/receipts/aliyun", include_in_schema=False)
    async def aliyun_receipts(reports: list[dict[str, Any]], _: Receipts) -> dict[str, Any]:
        """Aliyun SmsReport (HTTP batch push): ``biz_id``, ``phone_number``, ``success``, ``err_code``."""
        for r in reports:
            ok = r.get("success") in (True, "true")
            receipt = "DELIVERED" if ok else str(r.get("err_code") or "FAILED")
            at = _china_time(r.get("report_time"))
            await asyncio.to_thread(store.record_receipt, str(r.get("biz_id", "")), r.get("phone_number"),
                                    receipt, at)
        return {"code": 0, "msg": "成功"}

    @app.post("/sms/receipts/tencent", include_in_schema=False)
    async def tencent_receipts(reports: list[dict[str, Any]], _: Receipts) -> dict[str, Any]:
        """Tencent Cloud status callback: ``sid``, ``mobile``, ``report_status``, ``errmsg``."""
        for r in reports:
            ok = str(r.get("report_status", "")).upper() == "SUCCESS"
            receipt = "DELIVERED" if ok else str(r.get("errmsg") or "FAILED")
            mobile = r.get("mobile")
            at = _china_time(r.get("user_receive_time"))
            await asyncio.to_thread(store.record_receipt, str(r.get("sid", "")),
                                    str(mobile) if mobile else None, receipt, at)
        return {"result": 0, "errmsg": "OK"}

    from alerts.webapp import mount_app

    mount_app(app)
    return app


def _case_file(task: dict[str, Any], photos: list[dict[str, Any]],
               blobs: list[tuple[str, bytes] | None]) -> bytes:
    """The ZIP of a closed task: record.json (task, finding, evidence, audit), photos, SHA256SUMS."""
    record = {k: v for k, v in task.items() if k != "photos"}
    record["photos"] = [{k: v for k, v in p.items()} for p in photos]
    body = json.dumps(record, ensure_ascii=False, indent=2, default=str).encode()
    sums = [f"{hashlib.sha256(body).hexdigest()}  record.json"]
    out = io.BytesIO()
    ext = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("record.json", body)
        for p, blob in zip(photos, blobs, strict=True):
            if blob is None:
                continue
            name = f"photos/{p['sha256']}.{ext.get(blob[0], 'bin')}"
            z.writestr(name, blob[1])
            sums.append(f"{hashlib.sha256(blob[1]).hexdigest()}  {name}")
        z.writestr("SHA256SUMS", "\n".join(sums) + "\n")
    return out.getvalue()


def _china_time(value: Any) -> datetime:
    """``2026-07-15 10:03:04`` (the providers report China time); now if missing or unreadable."""
    try:
        return datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=_CHINA).astimezone(UTC)
    except ValueError:
        return datetime.now(UTC)

