"""The weijian wire contract v1: identifiers, metric catalogue, MQTT topics and payloads.

This module is the one place that spells a topic, a JSON key or a unit. The gateway
serialises with it, ingest parses with it, and the simulators' tests assert with it.
The authoritative text is ``docs/contract.md`` (which agrees with the shared CONTRACT.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

__all__ = [
    "ALERT_MEASUREMENT",
    "ALERT_TAGS",
    "CATALOGUE",
    "DEFAULT_TOPIC_ROOT",
    "FLAG_FIELD_SUFFIX",
    "FUTURE_TOLERANCE",
    "MAX_PAYLOAD_BYTES",
    "MAX_SEQ",
    "READING_TAGS",
    "SIGNATURE_HEADER",
    "SIGNATURE_WINDOW_S",
    "TIMESTAMP_HEADER",
    "AlertEvent",
    "AlertState",
    "Flag",
    "GatewayState",
    "GatewayStatus",
    "Identifier",
    "Kind",
    "MetricValue",
    "Reading",
    "RejectReason",
    "Rejection",
    "alert_subscription",
    "alert_topic",
    "check_identifier",
    "check_reading",
    "decode_reading",
    "decode_status",
    "encode_reading",
    "flag_field",
    "is_identifier",
    "offline_status",
    "parse_reading_topic",
    "reading_subscription",
    "reading_topic",
    "status_payload",
    "status_subscription",
    "status_topic",
    "status_topic_gateway",
    "unit_of",
    "validate_topic_root",
    "verify_webhook",
    "webhook_signature",
]

DEFAULT_TOPIC_ROOT: Final = "weijian/v1"
MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_SEQ: Final = 2**63 - 1
FUTURE_TOLERANCE: Final = timedelta(minutes=5)

_IDENTIFIER = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class Kind(StrEnum):
    """A monitored kind of site; also the InfluxDB measurement of its readings."""

    DRINKING_WATER = "drinking_water"
    SWIMMING_POOL = "swimming_pool"
    MEDICAL_WASTE = "medical_waste"
    COLD_CHAIN = "cold_chain"


class Flag(StrEnum):
    """HJ 212-2017 data flags (Table 8). Rules judge only ``N`` values."""

    NORMAL = "N"  # instrument working normally
    STOPPED = "F"  # instrument stopped (停运)
    MAINTENANCE = "M"  # produced during maintenance
    MANUAL = "S"  # manually entered set value
    DEVICE_FAULT = "D"  # instrument fault
    CALIBRATION = "C"  # instrument in calibration
    OVER_RANGE = "T"  # above the instrument's upper measurement limit
    COMM_FAILURE = "B"  # communication failure between instrument and data logger


# Canonical metrics per kind and their fixed units (CONTRACT.md, "Monitored kinds").
CATALOGUE: Final[Mapping[Kind, Mapping[str, str]]] = {
    Kind.DRINKING_WATER: {
        "free_chlorine": "mg/L",
        "total_chlorine": "mg/L",
        "turbidity": "NTU",
        "ph": "pH",
        "conductivity": "uS/cm",
        "temperature": "degC",
    },
    Kind.SWIMMING_POOL: {
        "free_chlorine": "mg/L",
        "combined_chlorine": "mg/L",
        "ph": "pH",
        "turbidity": "NTU",
        "orp": "mV",
        "temperature": "degC",
        "urea": "mg/L",
        "cyanuric_acid": "mg/L",
        # Equipment state, added within weijian/v1 (docs/contract.md): 1 running, 0 stopped.
        "circulation_on": "0/1",
        "disinfection_on": "0/1",
    },
    Kind.MEDICAL_WASTE: {
        "temperature": "degC",
        "humidity": "%RH",
        "door_open": "0/1",
        "weight": "kg",
    },
    Kind.COLD_CHAIN: {
        "temperature": "degC",
        "door_open": "0/1",
        "power_ok": "0/1",
        "humidity": "%RH",
    },
}


def unit_of(kind: Kind, metric: str) -> str | None:
    """Return the fixed unit of ``metric`` for ``kind``, or None if the kind has no such metric."""
    return CATALOGUE[kind].get(metric)


def is_identifier(value: str) -> bool:
    """Tell whether ``value`` is a valid site, device, gateway or district identifier."""
    return _IDENTIFIER.fullmatch(value) is not None


def check_identifier(value: str) -> str:
    """Return ``value`` if it is a valid identifier, else raise a pydantic-compatible error."""
    if not isinstance(value, str) or not is_identifier(value):
        raise PydanticCustomError(
            "bad_identifier",
            _IDENTIFIER_RULE + ", got '{value}'",
            {"value": value},
        )
    return value


Identifier = Annotated[str, AfterValidator(check_identifier)]

# The same rule checked inside pydantic-core (no Python call per field), for the models every
# message goes through. Its error, ``string_pattern_mismatch``, becomes ``bad_identifier``.
_WireIdentifier = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
_IDENTIFIER_RULE: Final = "must be 1-64 characters of [a-z0-9_-] starting with a letter or digit"


class RejectReason(StrEnum):
    """Why ingest refused a message; every rejected message is quarantined with one of these."""

    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    MALFORMED_JSON = "malformed_json"
    BAD_TOPIC = "bad_topic"
    BAD_IDENTIFIER = "bad_identifier"
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_METRIC = "unknown_metric"
    WRONG_UNIT = "wrong_unit"
    MISSING_FIELD = "missing_field"
    UNEXPECTED_FIELD = "unexpected_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    NULL_VALUE = "null_value"
    NAIVE_TIMESTAMP = "naive_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOPIC_MISMATCH = "topic_mismatch"
    UNKNOWN_DEVICE = "unknown_device"
    KIND_MISMATCH = "kind_mismatch"
    GATEWAY_MISMATCH = "gateway_mismatch"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that does not satisfy the contract.

    Attributes:
        reason: the closed-set reason, used for counting.
        field: dotted path of the offending field (``metrics.ph.unit``), ``topic`` or ``payload``.
        detail: a human-readable sentence naming what is wrong.
    """

    reason: RejectReason
    field: str
    detail: str


@pydantic_dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid", strict=True))
class MetricValue:
    """One measured value with its unit and HJ 212 data flag."""

    # Checked in pydantic-core (finite_number), no Python call per metric. That a null value
    # needs a flag other than N is checked by Reading, once for all its metrics.
    value: Annotated[float, Field(allow_inf_nan=False)] | None
    unit: str
    flag: Flag = Flag.NORMAL


# RFC 3339 section 5.6 ``date-time``: ``T`` or ``t`` (or a space, which its note allows) between
# date and time, seconds required, ``Z``/``z`` or ``+hh:mm``/``-hh:mm``. The offset is optional
# here only so that a time without one reaches pydantic's ``timezone_aware`` check and is told
# apart as ``naive_timestamp``. ``[0-9]``, not ``\d``: Rust's ``\d`` is any Unicode digit.
_RFC3339: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?$"
)
_RFC3339_RULE: Final = (
    "must be an RFC 3339 date-time with an offset, like 2026-11-22T08:00:00.000Z or 2026-11-22T16:00:00+08:00"
)


class _WireTimestamp:
    """``ts`` as the wire carries it: an RFC 3339 string with an offset, nothing else.

    pydantic's own datetime parsing also takes epoch numbers and strings (``"1767225600"``),
    ``+0800``, a missing seconds field, ``_`` and a comma fraction. From JSON, the string must
    first match :data:`_RFC3339` (both steps run in pydantic-core, with no Python call: this is
    every reading's path); a mismatch is the error ``rfc3339``, reported as ``wrong_type``. From
    Python (a model built in code) the field takes an aware datetime as before.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        text = core_schema.chain_schema([
            core_schema.custom_error_schema(
                core_schema.str_schema(pattern=_RFC3339, strict=True),
                custom_error_type="rfc3339",
                custom_error_message=_RFC3339_RULE,
            ),
            # lax: this step gets the Python str the pattern let through; it parses it.
            core_schema.datetime_schema(tz_constraint="aware", strict=False),
        ])
        return core_schema.json_or_python_schema(
            json_schema=text, python_schema=core_schema.datetime_schema(tz_constraint="aware")
        )


_Timestamp = Annotated[datetime, _WireTimestamp]


def _utc(ts: datetime) -> datetime:
    """``ts`` in UTC; as given when UTC cannot hold it (year 1 east of UTC, 9999 west of it).

    Such a time is outside every store's range; ingest quarantines it as ``ts_out_of_range``.
    """
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        return ts


class Reading(BaseModel):
    """One sample of one device: the payload of ``{root}/{site_id}/{device_id}/reading``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    site_id: _WireIdentifier
    device_id: _WireIdentifier
    gateway_id: _WireIdentifier
    kind: Kind
    ts: _Timestamp
    seq: int = Field(ge=0, le=MAX_SEQ)  # InfluxDB, SQLite and PostgreSQL hold a signed int64
    metrics: dict[str, MetricValue] = Field(min_length=1)
    # Optional, weijian's extension: true for backlog data the device re-sent after an outage
    # (HJ 212-2025 ``RF=1``); judged as late, never paged as live. Absent means false.
    resent: bool = False

    @field_validator("ts")
    @classmethod
    def _to_utc(cls, ts: datetime) -> datetime:
        return _utc(ts)

    @model_validator(mode="after")
    def _metrics_in_catalogue(self) -> Reading:
        known = CATALOGUE[self.kind]
        for name, metric in self.metrics.items():
            unit = known.get(name)
            if unit is None:
                raise PydanticCustomError(
                    "unknown_metric",
                    "metrics.{name}: '{name}' is not a metric of kind {kind}",
                    {"name": name, "kind": self.kind.value},
                )
            if metric.unit != unit:
                raise PydanticCustomError(
                    "wrong_unit",
                    "metrics.{name}.unit: expected '{want}', got '{got}'",
                    {"name": name, "want": unit, "got": metric.unit},
                )
            if metric.value is None and metric.flag is Flag.NORMAL:
                raise PydanticCustomError(
                    "null_value",
                    "metrics.{name}.value: value may be null only when the flag is not N",
                    {"name": name},
                )
        return self

    @field_serializer("ts")
    def _ts_rfc3339(self, ts: datetime) -> str:
        return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class GatewayState(StrEnum):
    """What a gateway's retained status topic says."""

    ONLINE = "online"
    OFFLINE = "offline"


class GatewayStatus(BaseModel):
    """Retained payload of ``{root}/gateways/{gateway_id}/status``; health keys are extra."""

    model_config = ConfigDict(extra="allow")

    gateway_id: Identifier
    state: GatewayState
    ts: _Timestamp

    @field_validator("ts")
    @classmethod
    def _to_utc(cls, ts: datetime) -> datetime:
        return _utc(ts)


class AlertState(StrEnum):
    """Lifecycle of an alert."""

    PENDING = "pending"
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertEvent(BaseModel):
    """A state change of one alert: published on ``{root}/alerts/{site_id}``."""

    model_config = ConfigDict(extra="forbid")

    alert_id: str = Field(min_length=1, max_length=128)
    site_id: Identifier
    device_id: Identifier
    kind: Kind
    district: Identifier
    rule: str = Field(min_length=1, max_length=128)
    severity: str = Field(min_length=1, max_length=32)
    state: AlertState
    value: float | None = None
    threshold: float | None = None
    message: str
    ts: AwareDatetime
    late: bool = False


# --- topics ----------------------------------------------------------------------------


def validate_topic_root(root: str) -> str:
    """Return ``root`` if it can prefix weijian topics, else raise ValueError naming why."""
    if not root or root.startswith("/") or root.endswith("/") or "//" in root:
        raise ValueError(f"topic root {root!r} must be non-empty levels separated by single '/'")
    if any(c in root for c in "+#\0") or root.startswith("$"):
        raise ValueError(f"topic root {root!r} must not contain '+', '#', NUL or start with '$'")
    return root


def reading_topic(root: str, site_id: str, device_id: str) -> str:
    """Build the topic a device's readings are published on."""
    return f"{root}/{check_identifier(site_id)}/{check_identifier(device_id)}/reading"


def reading_subscription(root: str) -> str:
    """The MQTT filter that matches every reading topic under ``root``."""
    return f"{root}/+/+/reading"


def status_topic(root: str, gateway_id: str) -> str:
    """Build a gateway's retained status topic."""
    return f"{root}/gateways/{check_identifier(gateway_id)}/status"


def status_subscription(root: str) -> str:
    """The MQTT filter that matches every gateway's status topic under ``root``."""
    return f"{root}/gateways/+/status"


def status_topic_gateway(root: str, topic: str) -> str | None:
    """The gateway id part of a status topic (not yet checked), or None if ``topic`` is not one."""
    head, tail = f"{root}/gateways/", "/status"
    if topic.startswith(head) and topic.endswith(tail) and len(topic) > len(head) + len(tail):
        return topic[len(head) : -len(tail)]
    return None


def alert_subscription(root: str) -> str:
    """The MQTT filter that matches every site's alert events under ``root``."""
    return f"{root}/alerts/+"


def alert_topic(root: str, site_id: str) -> str:
    """Build the topic a site's alert events are published on."""
    return f"{root}/alerts/{check_identifier(site_id)}"


def parse_reading_topic(root: str, topic: str) -> tuple[str, str] | Rejection:
    """Split a reading topic into ``(site_id, device_id)``, or say why it is not one."""
    prefix = root + "/"
    if not topic.startswith(prefix) or not topic.endswith("/reading"):
        return Rejection(RejectReason.BAD_TOPIC, "topic", f"{topic!r} is not {root}/+/+/reading")
    parts = topic[len(prefix) : -len("/reading")].split("/")
    if len(parts) != 2:
        return Rejection(RejectReason.BAD_TOPIC, "topic", f"{topic!r} is not {root}/+/+/reading")
    for name, value in zip(("site_id", "device_id"), parts, strict=True):
        if not is_identifier(value):
            return Rejection(
                RejectReason.BAD_IDENTIFIER, f"topic.{name}", f"{value!r} is not a valid identifier"
            )
    return parts[0], parts[1]


# --- payloads --------------------------------------------------------------------------


def encode_reading(reading: Reading) -> bytes:
    """Serialise a Reading to its UTF-8 JSON payload (``resent`` only when true)."""
    if reading.resent:
        return reading.model_dump_json().encode()
    return reading.model_dump_json(exclude=_LIVE).encode()


_LIVE: Final = {"resent"}


# pydantic error types -> our reasons; custom errors raised above already carry our names.
_ERROR_REASONS: Final[Mapping[str, RejectReason]] = {
    "json_invalid": RejectReason.MALFORMED_JSON,
    "json_type": RejectReason.MALFORMED_JSON,
    "missing": RejectReason.MISSING_FIELD,
    "extra_forbidden": RejectReason.UNEXPECTED_FIELD,
    "unexpected_keyword_argument": RejectReason.UNEXPECTED_FIELD,  # a metric's (a dataclass)
    "enum": RejectReason.UNKNOWN_KIND,
    "finite_number": RejectReason.NON_FINITE,
    "timezone_aware": RejectReason.NAIVE_TIMESTAMP,
    "rfc3339": RejectReason.WRONG_TYPE,
    "too_short": RejectReason.MISSING_FIELD,
    "string_pattern_mismatch": RejectReason.BAD_IDENTIFIER,
}


def _rejection_from(exc: ValidationError) -> Rejection:
    error = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    try:
        reason = RejectReason(kind)
    except ValueError:
        reason = _ERROR_REASONS.get(kind, RejectReason.WRONG_TYPE)
    if reason is RejectReason.UNKNOWN_KIND and path != "kind":
        reason = RejectReason.WRONG_TYPE  # an enum other than kind: the flag
    msg = error["msg"]
    if kind == "unexpected_keyword_argument":
        msg = "Extra inputs are not permitted"  # as for the reading's own keys
    if kind in ("unknown_metric", "wrong_unit", "null_value"):
        path, _, msg = msg.partition(": ")  # the model validator names the metric itself
    elif kind == "string_pattern_mismatch":
        msg = f"{_IDENTIFIER_RULE}, got {error['input']!r}"
    elif kind == "rfc3339":
        msg = f"{msg}, got {repr(error['input'])[:80]}"
    elif kind.startswith("datetime") and path == "ts":
        # Shaped like RFC 3339 but out of range; pydantic's own words name a failed date fallback.
        msg = (
            "not a valid date and time (month 1-12, a day in that month, hour 0-23, minute and "
            f"second 0-59, offset under 24 hours), got {repr(error['input'])[:80]}"
        )
    return Rejection(reason, path or "payload", f"{path or 'payload'}: {msg}")


def decode_reading(
    topic: str,
    payload: bytes,
    *,
    now: datetime,
    root: str = DEFAULT_TOPIC_ROOT,
    known_devices: Container[tuple[str, str]] | None = None,
) -> Reading | Rejection:
    """Parse and check one reading message against the contract.

    Args:
        topic: the MQTT topic it arrived on.
        payload: the raw message body.
        now: the receiver's clock, for the 5-minute future limit.
        root: the topic root in use.
        known_devices: ``(site_id, device_id)`` pairs in the site registry; None skips the check.

    Returns:
        The Reading, or a Rejection naming the reason and the field. Never raises for bad input.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        return _too_large(payload)
    where = parse_reading_topic(root, topic)
    if isinstance(where, Rejection):
        return where
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _not_utf8(exc)
    try:
        reading = Reading.model_validate_json(payload)
    except ValidationError as exc:
        return _rejection_from(exc)
    return check_reading(reading, where, now=now, known_devices=known_devices)


def check_reading(
    reading: Reading,
    where: tuple[str, str],
    *,
    now: datetime,
    known_devices: Container[tuple[str, str]] | None = None,
) -> Reading | Rejection:
    """Apply the checks that need context: clock, topic agreement, site registry (in this order)."""
    site_id, device_id = where
    if reading.ts > now + FUTURE_TOLERANCE:
        return _in_future(reading.ts, now)
    if reading.site_id != site_id:
        return Rejection(
            RejectReason.TOPIC_MISMATCH,
            "site_id",
            f"site_id: payload says {reading.site_id!r}, topic says {site_id!r}",
        )
    if reading.device_id != device_id:
        return Rejection(
            RejectReason.TOPIC_MISMATCH,
            "device_id",
            f"device_id: payload says {reading.device_id!r}, topic says {device_id!r}",
        )
    if known_devices is not None and where not in known_devices:
        return Rejection(
            RejectReason.UNKNOWN_DEVICE,
            "device_id",
            f"device_id: {site_id}/{device_id} is not in the site registry",
        )
    return reading


def _in_future(ts: datetime, now: datetime) -> Rejection:
    detail = f"ts: {ts.isoformat()} is more than 5 minutes after {now.isoformat()}"
    return Rejection(RejectReason.FUTURE_TIMESTAMP, "ts", detail)


def _too_large(payload: bytes) -> Rejection:
    detail = f"payload is {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}"
    return Rejection(RejectReason.TOO_LARGE, "payload", detail)


def _not_utf8(exc: UnicodeDecodeError) -> Rejection:
    return Rejection(RejectReason.INVALID_UTF8, "payload", f"payload is not UTF-8: {exc}")


def decode_status(gateway_id: str, payload: bytes, *, now: datetime) -> GatewayStatus | Rejection:
    """Parse and check one gateway status message, with a reading's limits and reasons.

    Args:
        gateway_id: the gateway id part of the status topic (:func:`status_topic_gateway`),
            not yet checked.
        payload: the raw message body (not empty: an empty one clears the retained status).
        now: the receiver's clock, for the 5-minute future limit.

    Returns:
        The GatewayStatus, or a Rejection naming the reason and the field, checked in this
        order: ``too_large``, ``bad_identifier`` (``topic.gateway_id``), ``invalid_utf8``,
        the JSON and its fields as for a reading, ``future_timestamp``, ``topic_mismatch``
        (``gateway_id``). Never raises for bad input.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        return _too_large(payload)
    if not is_identifier(gateway_id):
        return Rejection(
            RejectReason.BAD_IDENTIFIER, "topic.gateway_id", f"{gateway_id!r} is not a valid identifier"
        )
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _not_utf8(exc)
    try:
        status = GatewayStatus.model_validate_json(payload)
    except ValidationError as exc:
        return _rejection_from(exc)
    # Bounded like a reading's: the alert engine dates alerts and local times by it.
    if status.ts > now + FUTURE_TOLERANCE:
        return _in_future(status.ts, now)
    if status.gateway_id != gateway_id:
        return Rejection(
            RejectReason.TOPIC_MISMATCH,
            "gateway_id",
            f"gateway_id: payload says {status.gateway_id!r}, topic says {gateway_id!r}",
        )
    return status


def status_payload(status: GatewayStatus) -> bytes:
    """Serialise a gateway status (with its extra health keys) to JSON."""
    return status.model_dump_json().encode()


def offline_status(gateway_id: str, ts: datetime) -> GatewayStatus:
    """The status a gateway registers as its last will."""
    return GatewayStatus(gateway_id=gateway_id, state=GatewayState.OFFLINE, ts=ts)


# --- InfluxDB schema (CONTRACT.md "InfluxDB schema") -------------------------------------

# Readings: measurement = the kind's value, these tags, one float field per metric and a
# string field ``{metric}_flag`` where the flag is not N.
READING_TAGS: Final = ("device_id", "district", "gateway_id", "site_id")
FLAG_FIELD_SUFFIX: Final = "_flag"
# Alert state changes: one point per change, tagged by the alert's identity.
ALERT_MEASUREMENT: Final = "alert"
ALERT_TAGS: Final = ("device_id", "district", "kind", "rule", "severity", "site_id")


def flag_field(metric: str) -> str:
    """The InfluxDB field that holds a metric's flag when it is not N."""
    return metric + FLAG_FIELD_SUFFIX


# --- SMS webhook signature ---------------------------------------------------------------

SIGNATURE_HEADER: Final = "X-Weijian-Signature"
TIMESTAMP_HEADER: Final = "X-Weijian-Timestamp"
SIGNATURE_WINDOW_S: Final = 300  # how far a receiver should let the timestamp be from its clock


def webhook_signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Weijian-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>." + body``.

    The timestamp (the ``X-Weijian-Timestamp`` header, unix seconds) is signed with the body, so
    a captured request cannot be replayed later under a fresh timestamp.
    """
    message = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify_webhook(
    secret: bytes, body: bytes, signature: str, timestamp: str, *, now: float,
    window_s: float = SIGNATURE_WINDOW_S,
) -> bool:
    """What a receiver checks: a timestamp within ``window_s`` of ``now`` and its signature.

    Exactly as docs/alerts.md tells a relay: the timestamp header must be ASCII digits only (no
    sign, space or underscore, which ``int()`` would take), and the signature is the HMAC over
    the header's exact text, a ``.`` and the body, compared in constant time. A signature header
    that is not ASCII is refused (``hmac.compare_digest`` would raise on it).

    A receiver should also drop an ``Idempotency-Key`` it has already taken (within the window
    that is what stops a replay of the very same request).
    """
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(now - int(timestamp)) > window_s:
        return False
    expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not signature.isascii():
        return False
    return hmac.compare_digest(signature.encode(), expected.encode())
