"""The inspection-task HTTP JSON API for inspectors' mobile terminals (FastAPI).

Each supervision team has a bearer token (``[[alerts.teams]]``) and sees only the tasks of
its own districts: another district's task answers 404, as if it did not exist. The OpenAPI
document is served at ``/openapi.json`` and the interactive docs at ``/docs``.
"""

# No "from __future__ import annotations": FastAPI must see the local dependency types.
import asyncio
import hmac
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from alerts.store import Store, TasksDbUnavailable
from weijian.config import AlertTeam

__all__ = ["CloseRequest", "build_app"]

_bearer = HTTPBearer(auto_error=False)
_CHINA = timezone(timedelta(hours=8))


class Evidence(BaseModel):
    """What an inspector brings back from the site."""

    photos: list[str] = Field(default_factory=list, description="references (URLs or object keys) to photos")
    gps: tuple[float, float] | None = Field(None, description="latitude, longitude (WGS 84)")
    on_site_from: datetime | None = None
    on_site_to: datetime | None = None


class CloseRequest(BaseModel):
    """Closing a task: the finding (处置结论) and the evidence."""

    finding: str = Field(min_length=1)
    evidence: Evidence = Evidence()


class ClaimRequest(BaseModel):
    """Claiming a task: who takes it."""

    assignee: str = Field(min_length=1, max_length=128)


def build_app(store: Store, teams: list[AlertTeam], receipt_token: str | None = None) -> FastAPI:
    """The API application over ``store``, authorising by the teams' tokens.

    With ``receipt_token`` (``[sms] receipt_token``) it also takes the SMS providers' delivery
    receipts at ``POST /sms/receipts/aliyun`` and ``/sms/receipts/tencent`` (``?token=...``).
    """
    app = FastAPI(title="weijian inspection tasks", version="1",
                  description="巡查核查任务: list, show, claim and close inspection tasks.")

    # The database down is the API's degraded state, not a crash: 503 with Retry-After, and
    # the request can be repeated (a claim or close that failed was not committed).
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "the tasks database is unavailable; try again"}, status_code=503,
                            headers={"Retry-After": "5"})

    app.add_exception_handler(SQLAlchemyError, unavailable)
    app.add_exception_handler(TasksDbUnavailable, unavailable)

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

    def team(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> AlertTeam:
        if creds is None:
            raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
        for t in teams:
            if hmac.compare_digest(t.token.get_secret_value().encode(), creds.credentials.encode()):
                return t
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})

    Team = Annotated[AlertTeam, Depends(team)]

    async def visible(task_id: int, who: AlertTeam) -> dict[str, Any]:
        task = await asyncio.to_thread(store.task, task_id)
        if task is None or task["district"] not in who.districts:
            raise HTTPException(404, f"no task {task_id}")
        return task

    @app.get("/tasks")
    async def list_tasks(who: Team, status: str | None = None) -> list[dict[str, Any]]:
        """The team's tasks, newest first."""
        return await asyncio.to_thread(store.tasks, districts=who.districts, status=status)

    @app.get("/tasks/{task_id}")
    async def show_task(task_id: int, who: Team) -> dict[str, Any]:
        """One task with its audit trail."""
        return await visible(task_id, who)

    @app.post("/tasks/{task_id}/claim")
    async def claim_task(task_id: int, body: ClaimRequest, who: Team) -> dict[str, Any]:
        """Claim an open task; 409 if someone else was first."""
        await visible(task_id, who)
        if not await asyncio.to_thread(store.claim, task_id, body.assignee, datetime.now(UTC)):
            raise HTTPException(409, f"task {task_id} is not open")
        return await visible(task_id, who)

    @app.post("/tasks/{task_id}/close")
    async def close_task(task_id: int, body: CloseRequest, who: Team, request: Request) -> dict[str, Any]:
        """Close a claimed task with a finding and evidence; 409 if it is not claimed."""
        await visible(task_id, who)
        actor = request.headers.get("X-Inspector", who.name)
        ok = await asyncio.to_thread(store.close_task, task_id, actor, body.finding,
                                     body.evidence.model_dump(mode="json"), datetime.now(UTC))
        if not ok:
            raise HTTPException(409, f"task {task_id} is not claimed")
        return await visible(task_id, who)

    def receipts_allowed(token: str = "") -> None:
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

    return app


def _china_time(text: Any) -> datetime:
    """``2026-07-15 10:03:04`` (the providers report China time); now if missing or unreadable."""
    try:
        return datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S").replace(tzinfo=_CHINA).astimezone(UTC)
    except ValueError:
        return datetime.now(UTC)
