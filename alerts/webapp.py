"""The inspectors' mobile web app, served by the task API under ``/app/``.

Server-rendered pages (Jinja2) with one small script (``static/app.js``, no framework, no build
step): the pages are shells in Simplified Chinese, the script fills them from the JSON API with
the access token it keeps in the tab's ``sessionStorage`` (refreshed with the refresh token,
dropped on logout). Pages: ``/app/login``, ``/app/`` (my district's queue), ``/app/task/{id}``
(the task, its readings as a small chart, the site's address and map link, claim, photos,
position and close), ``/app/history`` (my tasks), ``/app/desk`` (the duty desk's view).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from alerts.api_findings import FINDINGS

__all__ = ["mount_app"]

_HERE = Path(__file__).resolve().parent / "web"
_PAGES = {"login": "登录", "queue": "待办任务", "task": "任务详情", "history": "我的任务", "desk": "值班台"}


def mount_app(app: FastAPI) -> None:
    """Add the app's pages and static files to the API application."""
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    app.mount("/app/static", StaticFiles(directory=str(_HERE / "static")), name="app-static")

    def page(request: Request, name: str, **extra: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, "page.html", {
            "page": name, "title": _PAGES[name], "findings": FINDINGS, **extra})

    @app.get("/app", include_in_schema=False)
    async def app_root() -> RedirectResponse:
        return RedirectResponse("/app/")

    def shell(name: str) -> Callable[[Request], Awaitable[HTMLResponse]]:
        async def endpoint(request: Request) -> HTMLResponse:
            return page(request, name)
        return endpoint

    for name, path in (("queue", "/app/"), ("login", "/app/login"), ("history", "/app/history"),
                       ("desk", "/app/desk")):
        app.add_api_route(path, shell(name), methods=["GET"], include_in_schema=False,
                          response_class=HTMLResponse)

    @app.get("/app/task/{task_id}", include_in_schema=False, response_class=HTMLResponse)
    async def task(request: Request, task_id: int) -> HTMLResponse:
        return page(request, "task", task_id=task_id)
