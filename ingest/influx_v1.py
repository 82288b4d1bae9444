"""InfluxDB 1.x HTTP API writer (``POST /write``): InfluxDB 1.x, and the 1.x API of 2.x and 3.x."""

from __future__ import annotations

import httpx

from weijian.config import InfluxSettings
from weijian.errors import InfluxRejected, InfluxUnavailable

__all__ = ["InfluxV1Writer"]


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
            InfluxUnavailable: connection failure, timeout, 5xx or 429 (retryable).
            InfluxRejected: another 4xx, e.g. a malformed point or an unknown database.
        """
        try:
            response = await self._client.post(self._url, params=self._params, content=body)
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"InfluxDB {self._url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 204:
            return
        detail = f"InfluxDB answered {response.status_code}: {response.text[:300]}"
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise InfluxUnavailable(detail)
        raise InfluxRejected(detail)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()
