"""InfluxDB 1.x HTTP API writer (``POST /write``): InfluxDB 1.x, and the 1.x API of 2.x and 3.x."""

from __future__ import annotations

import httpx

from weijian.config import InfluxSettings
from weijian.errors import InfluxRejected, InfluxUnavailable

__all__ = ["InfluxV1Writer"]

# Answers an operator fixes in InfluxDB or in the configuration, not in the data: until then
# the store is unavailable (the batch is spooled and written later), never refused.
_NEEDS_OPERATOR = {
    401: "bad credentials: check [influx] username and password",
    403: "not allowed to write: check [influx] username and password (the user needs WRITE on the database)",
    404: "database not found: create it, or check [influx] database (and [influx] url)",
}


class InfluxV1Writer:
    """Write line protocol with ``db``, ``rp``, ``u``/``p`` and ``precision=ns``."""

    def __init__(self, settings: InfluxSettings) -> None:
        self._url = settings.url.rstrip("/") + "/write"
        params = {"db": settings.database, "precision": "ns"}
        if settings.retention_policy:
            params["rp"] = settings.retention_policy
        if settings.username:
            params["u"] = settings.username
        if settings.password:
            params["p"] = settings.password.get_secret_value()
        self._params = params
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(settings.timeout_s))

    async def write(self, body: bytes) -> None:
        """Write one batch.

        Raises:
            InfluxUnavailable: connection failure, timeout, 5xx, 408 or 429, or 401, 403 or
                404 (credentials or database: the operator's to fix; retryable).
            InfluxRejected: another 4xx, e.g. a malformed point or a field type conflict (400).
        """
        try:
            response = await self._client.post(self._url, params=self._params, content=body)
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"InfluxDB {self._url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 204:
            return
        status = response.status_code
        detail = f"InfluxDB answered {status}: {response.text[:300].strip()}"
        if status in _NEEDS_OPERATOR:
            raise InfluxUnavailable(f"{detail} ({_NEEDS_OPERATOR[status]})")
        if status >= 500 or status in (408, 429):
            raise InfluxUnavailable(detail)
        raise InfluxRejected(detail)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()
