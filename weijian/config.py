"""Configuration: one TOML file per program plus ``WEIJIAN_<SECTION>__<KEY>`` overrides.

Every program reads the same :class:`Settings`; each uses only the sections it needs, so one
file or one set of environment variables can serve a whole deployment. Precedence, highest
first: environment variable, TOML file, built-in default. Unknown keys are errors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from weijian.clock import ClockSettings
from weijian.contract import DEFAULT_TOPIC_ROOT, Identifier, Kind, validate_topic_root
from weijian.errors import ConfigError
from weijian.redact import mask
from weijian.rules import Severity
from weijian.tomlfile import read_toml


def _port_or_off(value: Any) -> Any:
    """``false`` (TOML) or ``off``/empty (environment) turns an HTTP endpoint off."""
    if value is False or (isinstance(value, str) and value.strip().lower() in ("", "off", "false")):
        return None
    return value


# /metrics and /healthz: a port (0: any free one), or false for none.
MetricsPort = Annotated[Annotated[int, Field(ge=0, le=65535)] | None, BeforeValidator(_port_or_off)]

__all__ = [
    "ENV_PREFIX",
    "AlertRoute",
    "AlertTeam",
    "AlertsSettings",
    "GatewayDevice",
    "GatewaySettings",
    "GrafanaSettings",
    "InfluxSettings",
    "IngestSettings",
    "MqttSettings",
    "RegistrySettings",
    "Settings",
    "SmsSettings",
    "SpoolSettings",
    "TasksSettings",
    "load_settings",
]

ENV_PREFIX = "WEIJIAN_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a default


class MqttSettings(_Section):
    """Broker connection shared by the gateway, ingest and alerts."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    topic_root: str = DEFAULT_TOPIC_ROOT
    keepalive_s: int = Field(30, ge=5, le=3600)
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("topic_root")
    @classmethod
    def _root(cls, value: str) -> str:
        return validate_topic_root(value)


class InfluxSettings(_Section):
    """InfluxDB target: the 1.x HTTP API (``api = "v1"``) or the 2.x API (``api = "v2"``)."""

    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v1"
    database: str = "weijian"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    org: str | None = None
    bucket: str | None = None
    token: SecretStr | None = None
    timeout_s: float = Field(10.0, gt=0)


class RegistrySettings(_Section):
    """Where the site registry lives."""

    path: Path = Path("registry.toml")


_POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg://")


class TasksSettings(_Section):
    """Inspection-task database: ``sqlite:///path`` (default) or ``postgresql://...``."""

    url: str = "sqlite:///weijian-tasks.sqlite"

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", *_POSTGRES_SCHEMES)):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @property
    def is_postgres(self) -> bool:
        """Whether ``url`` names a PostgreSQL database (else a SQLite file)."""
        return self.url.startswith(_POSTGRES_SCHEMES)


class SmsSettings(_Section):
    """How SMS go out: a signed webhook to a relay, or an SMS provider's own API.

    ``provider = "webhook"`` posts to ``url`` signed with ``secret`` (docs/alerts.md).
    ``"aliyun"`` (Dysmsapi SendSms) and ``"tencent"`` (Tencent Cloud SMS SendSms, API 3.0) sign
    each request with ``access_key_id``/``access_key_secret`` as the provider documents, send
    ``template_code`` with ``sign_name``, and fill the template's variables from the message
    (``template_params``: template variable -> message field); ``sdk_app_id`` is Tencent's
    SmsSdkAppId. ``endpoint`` overrides the provider's API address (a test stand-in, a private
    endpoint). Delivery receipts come back to the task API (``/sms/receipts/<provider>``) with
    ``receipt_token`` in the query.
    """

    provider: Literal["webhook", "aliyun", "tencent"] = "webhook"
    url: str | None = None
    secret: SecretStr | None = None
    timeout_s: float = Field(5.0, gt=0)
    access_key_id: str | None = None
    access_key_secret: SecretStr | None = None
    sign_name: str | None = None
    template_code: str | None = None
    template_params: dict[str, str] = {"content": "text"}
    sdk_app_id: str | None = None
    region: str | None = None  # default: cn-hangzhou (aliyun), ap-guangzhou (tencent)
    endpoint: str | None = None
    receipt_token: SecretStr | None = None

    @model_validator(mode="after")
    def _provider_keys(self) -> SmsSettings:
        unsigned = self.secret is None or not self.secret.get_secret_value()
        if self.provider == "webhook" and self.url and unsigned:
            # An unsigned webhook would be signed with an empty key: anyone could forge one.
            raise ValueError("key 'secret': required with key 'url' (the webhook's HMAC-SHA256 key)")
        if self.provider != "webhook":
            need = ["access_key_id", "access_key_secret", "sign_name", "template_code"]
            if self.provider == "tencent":
                need.append("sdk_app_id")
            missing = [k for k in need if getattr(self, k) in (None, "")]
            if missing:
                raise ValueError(f"key {missing[0]!r}: required when provider = {self.provider!r}")
        return self


class GatewayDevice(_Section):
    """One device a gateway polls (``[[gateway.devices]]``); unset poll keys take the defaults.

    ``transport = "tcp"`` needs ``host`` (and ``port``); ``transport = "rtu"`` needs
    ``serial`` (the serial device path) and ``line`` (devices sharing a line name share the
    bus, polled one transaction at a time). The character format is ``bytesize``, ``parity``
    (``N``, ``E`` or ``O``) and ``stopbits``; the Modbus RTU specification's default is 8E1,
    many instruments ship with 8N1 (the default here) or 8N2. ``timestamp = "device"`` stamps
    readings with the instrument's own clock instead of the gateway's.
    """

    site_id: Identifier
    device_id: Identifier
    profile: str | None = None  # None: the profile named in the site registry
    unit_id: int = Field(1, ge=1, le=247)
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial: str | None = None
    baudrate: int = Field(9600, ge=300, le=921600)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    line: str | None = None
    poll_interval_s: float | None = Field(None, gt=0)
    timeout_s: float | None = Field(None, gt=0)
    retries: int | None = Field(None, ge=0, le=10)
    timestamp: Literal["gateway", "device"] = "gateway"

    @model_validator(mode="after")
    def _transport_details(self) -> GatewayDevice:
        if self.transport == "tcp" and not self.host:
            raise ValueError("key 'host': required when transport = 'tcp'")
        if self.transport == "rtu" and not self.serial:
            raise ValueError("key 'serial': required when transport = 'rtu'")
        return self


class Hj212Logger(_Section):
    """``[[gateway.hj212.loggers]]``: one HJ 212 data logger (数采仪) and the device it speaks for."""

    mn: str = Field(min_length=1, max_length=64)  # the logger's MN (24 hex characters in 2025)
    password: SecretStr  # PW, at most 6 characters per HJ 212
    site_id: Identifier
    device_id: Identifier
    key: SecretStr | None = None  # SM4 key, 32 hex characters (HJ 212-2025 §6.4), if it encrypts
    # The upload that becomes readings: real-time 2011, minute 2051, hour 2061 or day 2031. The
    # others are answered and forwarded, not stored (their times would collide in InfluxDB).
    store_cn: Literal["2011", "2051", "2061", "2031"] = "2011"
    # Host commands sent once per connection, on its first packet (docs/hj212.md):
    set_clock: bool = True  # 1012 with the gateway's time; again when its data time is off
    rtd_interval_s: int | None = Field(None, ge=30, le=3600)  # 1062 RtdInterval
    min_interval_min: int | None = Field(None, ge=1, le=30)  # 1064 MinInterval
    overtime_s: int | None = Field(None, ge=1, le=3600)  # 1000 OverTime (with recount)
    recount: int | None = Field(None, ge=0, le=10)  # 1000 ReCount (with overtime_s)

    @model_validator(mode="after")
    def _timeout_pair(self) -> Hj212Logger:
        if (self.overtime_s is None) != (self.recount is None):
            raise ValueError("key 'overtime_s' and key 'recount' go together (one 1000 command sets both)")
        return self

    @field_validator("key")
    @classmethod
    def _hex_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value()
            if len(text) != 32 or any(c not in "0123456789abcdefABCDEF" for c in text):
                raise ValueError("must be 32 hex characters (a 16-byte SM4 key)")
        return value


class Hj212Upstream(_Section):
    """``[[gateway.hj212.upstreams]]``: a platform the loggers' packets are forwarded to, unchanged."""

    name: Identifier
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    timeout_s: float = Field(10.0, gt=0)  # HJ 212 Table 1's default answer timeout


class Hj212Settings(_Section):
    """``[gateway.hj212]``: a TCP listener for HJ 212 data loggers (docs/hj212.md)."""

    listen_host: str = "0.0.0.0"
    listen_port: int | None = Field(None, ge=0, le=65535)  # None: no listener
    loggers: list[Hj212Logger] = []
    upstreams: list[Hj212Upstream] = []
    idle_timeout_s: float = Field(300.0, gt=0)  # a connection silent this long is closed
    command_timeout_s: float = Field(5.0, gt=0)  # wait this long for a logger's 9011 / 9012
    command_retries: int = Field(2, ge=0, le=10)  # a request unanswered is sent again (same QN)
    clock_tolerance_s: float = Field(120.0, gt=0)  # live data further off than this: set the clock
    control_socket: Path | None = None  # `weijian gateway hj212`; default <spool file>.hj212.sock


class SpoolSettings(_Section):
    """The gateway's on-disk queue (SQLite, WAL mode); see docs/gateway.md for guarantees."""

    path: Path = Path("gateway-spool.sqlite")
    max_rows: int = Field(1_000_000, ge=100)
    fsync: Literal["full", "normal"] = "full"  # full: survives power loss; normal: SIGKILL


class GatewaySettings(_Section):
    """``[gateway]``: identity, spool, publishing window, poll defaults and devices."""

    id: Identifier | None = None  # required by `weijian gateway run`
    spool: SpoolSettings = SpoolSettings()
    status_interval_s: float = Field(30.0, gt=0)
    max_inflight: int = Field(1000, ge=1, le=65535)
    drain_timeout_s: float = Field(10.0, ge=0)
    poll_interval_s: float = Field(60.0, gt=0)
    timeout_s: float = Field(1.0, gt=0)
    retries: int = Field(1, ge=0, le=10)
    backoff_max_s: float = Field(300.0, gt=0)
    # RS-485: the least silence between any two frames on a line (never below 3.5 characters)
    frame_gap_s: float = Field(0.03, ge=0)
    metrics_host: str = "127.0.0.1"
    metrics_port: MetricsPort = 9109
    devices: list[GatewayDevice] = []
    hj212: Hj212Settings = Hj212Settings()


class GrafanaSettings(_Section):
    """``[grafana]``: where ``dashboards push`` sends, and how Grafana reaches the stores.

    ``influx_url`` and ``tasks_url`` are the addresses *Grafana* uses, which differ from
    ours when Grafana runs in a container; unset, they default to ``[influx] url`` and
    ``[tasks] url``.
    """

    url: str = "http://127.0.0.1:3000"
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    org_id: int = Field(1, ge=1)
    folder_uid: str = Field("weijian", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    folder_title: str = "卫监在线监测"
    influx_url: str | None = None
    tasks_url: str | None = None
    expected_interval_s: float = Field(60.0, gt=0)
    silent_after_min: int = Field(15, ge=1)
    timeout_s: float = Field(10.0, gt=0)


class IngestSettings(_Section):
    """``[ingest]``: MQTT session, batching, spool, quarantine, dedup, metrics; see docs/ingest.md."""

    # The deployment's name, the same in every ingest process: partition p's MQTT sessions are
    # "{client_id}-p{p}" (storage) and "{client_id}-p{p}-alerts", and its advisory-lock keys
    # derive from it.
    client_id: str = Field("weijian-ingest", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    shared_group: Identifier = "ingest"  # unused since partitions replaced $share (kept so old files load)
    partitions: int = Field(8, ge=1, le=1024)  # fixed: every process of a deployment must agree
    coordination: Literal["auto", "postgres", "local"] = "auto"  # auto: postgres if [tasks] url is
    claim_interval_s: float = Field(2.0, gt=0)  # seconds between claim rounds
    member_timeout_s: float = Field(20.0, ge=2)  # a vanished process's partitions are freed after this
    lock_path: Path | None = None  # local coordination's file lock; None: beside the SQLite tasks db
    catch_unknown_sites: bool = True  # quarantine readings of sites absent from the registry
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0)  # broker keeps the session this long
    receive_maximum: int = Field(20_000, ge=1, le=65535)  # unacked messages the broker may send
    batch_size: int = Field(5000, ge=1)
    batch_interval_s: float = Field(0.2, gt=0)
    write_retries: int = Field(3, ge=0, le=20)
    backoff_max_s: float = Field(30.0, gt=0)
    spool_path: Path = Path("ingest-spool.sqlite")
    spool_max_points: int = Field(5_000_000, ge=1000)
    quarantine_path: Path = Path("ingest-quarantine.sqlite")
    dedup_path: Path = Path("ingest-dedup.sqlite")
    dedup_window: int = Field(100_000, ge=100)  # seqs remembered per gateway
    alerts_inbox_size: int = Field(10_000, ge=1)
    alerts_events_size: int = Field(1000, ge=1)
    alerts: bool = True
    fast_path: bool = True  # parse PUBLISH packets from paho's buffer; false: paho's own reader
    metrics_host: str = "127.0.0.1"
    metrics_port: MetricsPort = 9108
    drain_timeout_s: float = Field(10.0, ge=0)


class AlertRoute(_Section):
    """``[[alerts.routes]]``: a node of the notification routing tree.

    At each level the first matching node (in file order) is taken and its children are tried
    the same way; the deepest node reached wins, with its own channels and phones. Unset match
    keys match everything.
    """

    district: Identifier | None = None  # the registry's district id (a contract identifier)
    kind: Kind | None = None
    min_severity: Severity = Severity.WARNING  # advisory (info) alerts page nobody by default
    channels: list[Literal["sms", "wecom", "dingtalk"]] = ["sms"]
    phones: list[str] = []  # extra SMS recipients, besides the escalation level's contacts
    routes: list[AlertRoute] = []


class AlertTeam(_Section):
    """``[[alerts.teams]]``: a supervision team's API bearer token and the districts it sees."""

    name: str = Field(min_length=1, max_length=60)  # audit rows name it: "team:<name>"
    token: SecretStr
    districts: list[Identifier] = Field(min_length=1)


class AlertsSettings(_Section):
    """``[alerts]``: rule evaluation, escalation, inspection tasks, notifications and the API.

    See docs/alerts.md for every key.
    """

    rules_dir: Path | None = None  # None: the packs shipped in weijian/rulepacks
    tick_s: float = Field(15.0, gt=0)  # wall seconds between clock ticks
    late_after_s: float = Field(300.0, ge=0)  # a reading older than this on arrival is late
    repeat_interval_min: float = Field(240.0, gt=0)
    # Unacknowledged: level 2, then level 3 (minutes after firing).
    escalate_after_min: list[Annotated[float, Field(gt=0)]] = [30.0, 60.0]
    notify_resolved: bool = False
    min_task_severity: Severity = Severity.WARNING
    sla_h: dict[Severity, Annotated[float, Field(gt=0)]] = {
        Severity.CRITICAL: 2.0, Severity.WARNING: 24.0, Severity.INFO: 72.0,
    }
    routes: list[AlertRoute] = [AlertRoute()]
    teams: list[AlertTeam] = []
    api_host: str = "127.0.0.1"
    api_port: int = Field(8090, ge=1, le=65535)
    # HTTPS (docs/operations.md): the API serves TLS itself with both set; otherwise it serves
    # plain HTTP only on a loopback api_host, unless api_allow_plain_http (behind a TLS proxy).
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None
    api_allow_plain_http: bool = False
    # Proxies whose X-Forwarded-Proto is believed (their addresses); loopback is always one.
    api_trusted_proxies: list[str] = []
    api_access_ttl_s: int = Field(900, ge=30, le=86_400)  # an inspector's access token
    api_refresh_ttl_s: int = Field(43_200, ge=60, le=30 * 86_400)  # its refresh token (a shift)
    api_max_failed_logins: int = Field(5, ge=1, le=100)  # in a row; then the account is locked
    api_lockout_s: int = Field(900, ge=1, le=86_400)
    api_photo_max_bytes: int = Field(5 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024)
    api_photos_per_task: int = Field(10, ge=1, le=100)
    wecom_url: str | None = None
    dingtalk_url: str | None = None
    dingtalk_secret: SecretStr | None = None
    outbox_poll_s: float = Field(1.0, gt=0)
    outbox_concurrency: int = Field(8, ge=1, le=256)
    retry_initial_s: float = Field(1.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    retry_jitter: float = Field(0.2, ge=0, le=1)
    max_attempts: int = Field(0, ge=0)  # 0: retry until delivered
    rate_per_recipient_per_h: int = Field(20, ge=1)
    # Channel budgets: what goes past them is folded into one summary message, never dropped.
    robot_per_min: int = Field(20, ge=2)  # DingTalk and WeCom robots: 20 a minute, then ~10 min lockout
    sms_per_number_per_day: int = Field(50, ge=2)  # Aliyun: 50 per 24 h per signature and template
    db_timeout_s: float = Field(10.0, gt=0)
    # Seconds between saves of each partition's engine state; judged readings are acknowledged
    # after the save (or at once when they change an alert), so a successor judges none twice.
    checkpoint_s: float = Field(0.5, gt=0)
    batch_interval_s: float = Field(0.005, gt=0)  # alerts sessions: gather this long after a first message

    @model_validator(mode="after")
    def _tls_pair(self) -> AlertsSettings:
        if (self.api_tls_cert is None) != (self.api_tls_key is None):
            raise ValueError("key 'api_tls_cert' and key 'api_tls_key' go together")
        return self


class Settings(BaseSettings):
    """All of weijian's settings; sections default so a program needs only what it uses."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    registry: RegistrySettings = RegistrySettings()
    tasks: TasksSettings = TasksSettings()
    sms: SmsSettings = SmsSettings()
    clock: ClockSettings = ClockSettings()
    alerts: AlertsSettings = AlertsSettings()
    gateway: GatewaySettings = GatewaySettings()
    ingest: IngestSettings = IngestSettings()
    grafana: GrafanaSettings = GrafanaSettings()

    _source: Path | None = PrivateAttr(None)  # the --config file they were read from, for messages

    def key_error(self, *problems: tuple[str, str]) -> ConfigError:
        """A :class:`ConfigError` about dotted keys, worded as :func:`load_settings` words its own.

        Args:
            problems: ``(dotted.key, what is wrong)`` pairs, one line each.

        Returns:
            An error whose lines name the file the settings came from (or "configuration"),
            the key and the problem, followed by the environment overrides in effect.
        """
        where = str(self._source) if self._source else "configuration"
        message = "\n".join(f"{where}: key {key!r}: {mask(problem)}" for key, problem in problems)
        overridden = sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX) and "__" in k)
        if overridden:
            message += f" (environment overrides in effect: {', '.join(overridden)})"
        return ConfigError(message)

    def check_ingest_run(self) -> None:
        """What ``weijian ingest run`` needs beyond what every program checks at load time.

        Other programs use ``[influx]`` without writing (the v1 query API needs no org or
        bucket) and never coordinate, so these keys are checked by the program that needs them.

        Raises:
            ConfigError: ``[influx] api = "v2"`` without ``org``, ``bucket`` or ``token``, or
                ``[ingest] coordination = "postgres"`` with a ``[tasks] url`` that is not
                PostgreSQL; one line per key at fault, each naming the file and the key.
        """
        problems: list[tuple[str, str]] = []
        if self.influx.api == "v2":
            needed = "required when api = 'v2' (the InfluxDB 2.x write API needs org, bucket and token)"
            problems += [(f"influx.{key}", needed) for key in ("org", "bucket", "token")
                         if not getattr(self.influx, key)]
        if self.ingest.coordination == "postgres" and not self.tasks.is_postgres:
            problems.append((
                "ingest.coordination",
                f'coordination = "postgres" needs [tasks] url = "postgresql://...", not {self.tasks.url!r}',
            ))
        if problems:
            raise self.key_error(*problems)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the TOML passed in; the first source wins, merged deeply."""
        return (env_settings, init_settings)


_PATH_KEYS = ("path", "tls_ca", "tls_cert", "tls_key", "api_tls_cert", "api_tls_key", "control_socket")


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative file paths in the file relative to the file's folder, as users expect.

    Applies at any depth to every key named ``path``, ``*_path``, ``*_dir``, ``tls_ca``,
    ``tls_cert``, ``tls_key``, ``api_tls_cert``, ``api_tls_key`` or ``control_socket``.
    """
    for key, value in data.items():
        if isinstance(value, dict):
            _resolve_paths(value, base)
        elif (
            isinstance(value, str)
            and (key in _PATH_KEYS or key.endswith(("_path", "_dir")))
            and not Path(value).is_absolute()
        ):
            data[key] = str(base / value)


def _check_environment_sections() -> None:
    """``WEIJIAN_<SECTION>__<KEY>`` for a section that does not exist is an error, like an unknown key.

    pydantic-settings reads only the variables of known sections and would ignore the rest, so
    a misspelt section (``WEIJIAN_INGST__ALERTS``) would change nothing, silently.
    """
    sections = set(Settings.model_fields)
    for name in sorted(os.environ):
        if not name.upper().startswith(ENV_PREFIX) or "__" not in name[len(ENV_PREFIX):]:
            continue  # WEIJIAN_VENV and the like are not settings
        section = name[len(ENV_PREFIX):].split("__", 1)[0].lower()
        if section not in sections:
            known = ", ".join(sorted(sections))
            raise ConfigError(f"environment variable {name}: no section [{section}] (sections: {known})")


def load_settings(path: Path | None) -> Settings:
    """Read the TOML file (if given) and apply environment overrides.

    Raises:
        ConfigError: the file is missing, unreadable or not TOML, or a key is unknown or
            invalid; the message names the file (or the environment variable) and the key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path, ConfigError, "configuration file")
        _resolve_paths(data, path.resolve().parent)
    _check_environment_sections()
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        overridden = sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX))
        error = ConfigError.from_validation(path, exc)
        if overridden:
            error = ConfigError(f"{error} (environment overrides in effect: {', '.join(overridden)})")
        raise error from exc
    settings._source = path
    return settings
