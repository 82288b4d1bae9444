"""ingest's exceptions, under weijian's tree; library errors are translated into these.

WeijianError
 ├── UsageError
 │    └── AlertsUnavailable   ``[ingest] alerts = true`` but the alerts stage cannot be imported
 └── StoreError               InfluxDB did not take a batch
      ├── StoreUnavailable    retryable: connection refused, timeout, 5xx, 429
      └── StoreRejected       permanent: InfluxDB answered 4xx about the data (not retried)
"""

from __future__ import annotations

from weijian.errors import UsageError, WeijianError

__all__ = ["AlertsUnavailable", "StoreError", "StoreRejected", "StoreUnavailable"]


class AlertsUnavailable(UsageError):
    """The alert engine is switched on but its package cannot be loaded."""


class StoreError(WeijianError):
    """InfluxDB did not accept a batch."""


class StoreUnavailable(StoreError):
    """InfluxDB is unreachable or overloaded; the batch may succeed later."""


class StoreRejected(StoreError):
    """InfluxDB refused the data itself; retrying the same batch cannot help."""
