"""InfluxDB line protocol for readings and alert events, per docs/contract.md "InfluxDB schema".

Built with plain string formatting: the tags of a reading are contract identifiers
(``[a-z0-9_-]``), which need no escaping, so a reading costs one f-string per metric.
"""

from __future__ import annotations

from datetime import UTC, datetime

from weijian.contract import ALERT_MEASUREMENT, FLAG_FIELD_SUFFIX, AlertEvent, Flag, Reading

__all__ = ["STORABLE_FROM", "STORABLE_UNTIL", "alert_line", "reading_line", "time_ns"]

# InfluxDB stores int64 nanoseconds since the epoch: about 1677-09-21 to 2262-04-11.
STORABLE_FROM = datetime(1677, 9, 22, tzinfo=UTC)
STORABLE_UNTIL = datetime(2262, 4, 11, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NORMAL = Flag.NORMAL


def time_ns(ts: datetime) -> int:
    """Nanoseconds since the epoch, exactly (no float rounding)."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def reading_line(reading: Reading, district: str) -> str:
    """One point: measurement = kind, four tags, a float per metric, ``{metric}_flag`` if not N.

    A null value (allowed only with a flag other than N) yields only the flag field. A re-sent
    reading also gets the boolean field ``resent=true``.
    """
    fields = []
    for name, metric in reading.metrics.items():
        if metric.value is not None:
            fields.append(f"{name}={float(metric.value)!r}")
        if metric.flag is not _NORMAL:
            fields.append(f'{name}{FLAG_FIELD_SUFFIX}="{metric.flag.value}"')
    if reading.resent:
        fields.append("resent=true")  # re-sent backlog (HJ 212 RF=1), docs/hj212.md
    # The tags are weijian.contract.READING_TAGS, written in that (sorted) order.
    return (
        f"{reading.kind.value},device_id={reading.device_id},district={district},"
        f"gateway_id={reading.gateway_id},site_id={reading.site_id} "
        f"{','.join(fields)} {time_ns(reading.ts)}"
    )


def _tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def alert_line(event: AlertEvent) -> str:
    """One point in the ``alert`` measurement at the moment of the state change (tags: ALERT_TAGS)."""
    tags = ",".join(
        f"{key}={_tag(value)}"
        for key, value in (
            ("device_id", event.device_id),
            ("district", event.district),
            ("kind", event.kind.value),
            ("rule", event.rule),
            ("severity", event.severity),
            ("site_id", event.site_id),
        )
        if value
    )
    fields = [
        f"alert_id={_string(event.alert_id)}",
        f"state={_string(event.state.value)}",
        f"message={_string(event.message)}",
    ]
    if event.value is not None:
        fields.append(f"value={float(event.value)!r}")
    if event.threshold is not None:
        fields.append(f"threshold={float(event.threshold)!r}")
    return f"{ALERT_MEASUREMENT},{tags} {','.join(fields)} {time_ns(event.ts.astimezone(UTC))}"
