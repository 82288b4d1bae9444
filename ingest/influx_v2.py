"""InfluxDB 2.x API writer through influxdb-client (org, bucket, token).

influxdb-client's asyncio API needs aiohttp, which we do not install; its synchronous
``WriteApi`` runs in a worker thread instead, one batch per call.
"""

from __future__ import annotations

import asyncio

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from weijian.config import InfluxSettings
from weijian.errors import InfluxRejected, InfluxUnavailable

__all__ = ["InfluxV2Writer"]


class InfluxV2Writer:
    """Write line protocol to ``/api/v2/write`` with ``Authorization: Token ...``."""

    def __init__(self, settings: InfluxSettings) -> None:
        if not (settings.org and settings.bucket and settings.token):
            from weijian.errors import ConfigError

            raise ConfigError("influx: api = 'v2' needs key 'org', key 'bucket' and key 'token'")
        self._org = settings.org
        self._bucket = settings.bucket
        self._client = InfluxDBClient(
            url=settings.url,
            token=settings.token.get_secret_value(),
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
            retries=0,  # retries and backoff are ingest's policy (ingest/store.py)
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def _write(self, body: bytes) -> None:
        try:
            self._api.write(
                bucket=self._bucket,
                org=self._org,
                record=body,
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            detail = f"InfluxDB answered {exc.status}: {str(exc.body)[:300]}"
            if exc.status is None or exc.status >= 500 or exc.status in (408, 429):
                raise InfluxUnavailable(detail) from exc
            raise InfluxRejected(detail) from exc
        except Exception as exc:  # urllib3 connection and timeout errors
            raise InfluxUnavailable(f"InfluxDB: {type(exc).__name__}: {exc}") from exc

    async def write(self, body: bytes) -> None:
        """Write one batch.

        Raises:
            InfluxUnavailable: connection failure, timeout, 5xx or 429 (retryable).
            InfluxRejected: another 4xx (bad data, unknown bucket, bad token).
        """
        await asyncio.to_thread(self._write, body)

    async def aclose(self) -> None:
        """Close the client."""
        await asyncio.to_thread(self._client.close)
