"""Read from InfluxDB with InfluxQL over HTTP: the 1.x ``/query`` API, which 2.x also serves.

With ``[influx] api = "v1"`` the query goes to ``/query?db=<database>`` (``rp`` when a retention
policy is set; ``u``/``p`` when a user is set). With ``api = "v2"`` it goes to the same endpoint
with ``Authorization: Token <token>`` and ``db=<bucket>``: InfluxDB 2.x answers InfluxQL through
its 1.x compatibility API, which needs a DBRP mapping of the bucket (``influx v1 dbrp create``).
"""

from __future__ import annotations

from typing import Any

import httpx

from weijian.config import InfluxSettings
from weijian.errors import InfluxUnavailable

__all__ = ["query", "query_many", "quote_ident", "quote_string"]


def quote_string(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    """An InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def query(settings: InfluxSettings, q: str, *, epoch: str = "ms") -> list[dict[str, Any]]:
    """The ``series`` of the first statement's result (empty when it has none).

    Raises:
        InfluxUnavailable: InfluxDB cannot be reached, refused the query or answered an error.
    """
    return (await query_many(settings, [q], epoch=epoch))[0]


async def query_many(settings: InfluxSettings, statements: list[str], *,
                     epoch: str = "ms") -> list[list[dict[str, Any]]]:
    """Several statements in one request: the ``series`` of each, in order.

    Raises:
        InfluxUnavailable: InfluxDB cannot be reached, refused the query or answered an error.
    """
    q = ";".join(statements)
    params = {"epoch": epoch}
    headers = {}
    if settings.api == "v2":
        params["db"] = settings.bucket or settings.database
        if settings.token is not None:
            headers["Authorization"] = f"Token {settings.token.get_secret_value()}"
    else:
        params["db"] = settings.database
        if settings.retention_policy:
            params["rp"] = settings.retention_policy
        if settings.username:
            params["u"] = settings.username
            params["p"] = settings.password.get_secret_value() if settings.password else ""
    url = settings.url.rstrip("/") + "/query"
    try:
        async with httpx.AsyncClient(timeout=settings.timeout_s) as client:
            # POST: many statements do not fit a URL; the 1.x API takes q from the form body.
            response = await client.post(url, params=params, data={"q": q}, headers=headers)
    except httpx.HTTPError as exc:
        raise InfluxUnavailable(f"{settings.url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise InfluxUnavailable(f"{settings.url}: HTTP {response.status_code}: {response.text[:200]}")
    if "error" in response.json():
        raise InfluxUnavailable(f"{settings.url}: {response.json()['error']}")
    results = response.json().get("results", [])
    out: list[list[dict[str, Any]]] = []
    for i in range(len(statements)):
        result: dict[str, Any] = next((r for r in results if r.get("statement_id", -1) == i), {})
        if "error" in result:
            raise InfluxUnavailable(f"{settings.url}: {result['error']}")
        out.append(result.get("series", []))
    return out
