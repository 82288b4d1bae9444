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
from weijian.errors import ConfigError, InfluxRejected, InfluxUnavailable

__all__ = ["InfluxV2Writer"]

# Answers an operator fixes in InfluxDB or in the configuration, not in the data: until then
# the store is unavailable (the batch is spooled and written later), never refused.
_NEEDS_OPERATOR = {
    401: "bad credentials: check [influx] token",
    403: "not allowed to write: check [influx] token (it needs write permission on the bucket)",
    404: "bucket or organisation not found: create it, or check [influx] bucket and org (and [influx] url)",
}


class InfluxV2Writer:
    """Write line protocol to ``/api/v2/write`` with ``Authorization: Token ...``."""

    def __init__(self, settings: InfluxSettings) -> None:
        if not (settings.org and settings.bucket and settings.token):
            # `weijian ingest run` has refused this already, naming the file (Settings.check_ingest_run).
            raise ConfigError(
                "key 'influx.org', key 'influx.bucket' and key 'influx.token': required when api = 'v2'"
            )
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
            status = exc.status
            detail = f"InfluxDB answered {status}: {str(exc.body)[:300].strip()}"
            if status in _NEEDS_OPERATOR:
                raise InfluxUnavailable(f"{detail} ({_NEEDS_OPERATOR[status]})") from exc
            if status is None or status >= 500 or status in (408, 429):
                raise InfluxUnavailable(detail) from exc
            raise InfluxRejected(detail) from exc
        except Exception as exc:  # urllib3 connection and timeout errors
            raise InfluxUnavailable(f"InfluxDB: {type(exc).__name__}: {exc}") from exc

    async def write(self, body: bytes) -> None:
        """Write one batch.

        Raises:
            InfluxUnavailable: connection failure, timeout, 5xx, 408 or 429, or 401, 403 or
                404 (token, bucket or org: the operator's to fix; retryable).
            InfluxRejected: another 4xx, e.g. bad line protocol or a field type conflict (400).
        """
        await asyncio.to_thread(self._write, body)

    async def aclose(self) -> None:
        """Close the client."""
        await asyncio.to_thread(self._client.close)
