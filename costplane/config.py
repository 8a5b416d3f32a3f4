"""Typed, validated configuration: one pydantic-settings class per component, env prefix ``COSTPLANE_``.

Resolution order for every endpoint: explicit ``COSTPLANE_*`` environment variables, then the endpoints file
written by a running ``costplane dev up`` stack, then the dev stack's default ports. So every command works
against the local stack with no configuration, and against production with environment variables only.
Secrets are ``SecretStr``: they print as ``**********`` and are never logged.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict


def _xdg(var: str, fallback: str) -> Path:
    base = os.environ.get(var)
    return Path(base) if base else Path.home() / fallback


def default_state_dir() -> Path:
    """Where the dev stack keeps data, logs, pid files and its endpoints file: ``COSTPLANE_DEV_STATE_DIR`` when set.

    Every other default location of local data (the chDB directory, the spool, the worker's data folder) derives
    from it, so one variable moves everything a stack writes and two stacks never share a file.
    """
    chosen = os.environ.get("COSTPLANE_DEV_STATE_DIR")
    return Path(chosen).expanduser() if chosen else _xdg("XDG_STATE_HOME", ".local/state") / "costplane" / "dev"


def default_spool_dir() -> Path:
    """The publisher's spool: ``<COSTPLANE_DEV_STATE_DIR>/spool`` when that is set, else beside the default state
    folder (``~/.local/state/costplane/spool``, where earlier versions kept it)."""
    if os.environ.get("COSTPLANE_DEV_STATE_DIR"):
        return default_state_dir() / "spool"
    return default_state_dir().parent / "spool"


def default_cache_dir() -> Path:
    """Where downloaded artifacts (Kafka jars resolved by Maven) are cached across stacks."""
    return _xdg("XDG_CACHE_HOME", ".cache") / "costplane"


class ConfigError(RuntimeError):
    """Raised with a readable, multi-line message when settings fail validation."""


class DevStackSettings(BaseSettings):
    """The local stack started by ``costplane dev up``."""

    model_config = SettingsConfigDict(env_prefix="COSTPLANE_DEV_", extra="ignore")

    state_dir: Path = Field(default_factory=default_state_dir, description="Data, logs, pids, endpoints.")
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Cached Kafka jars.")
    kafka_version: str = Field("3.9.1", description="Apache Kafka broker version (Maven Central).")
    kafka_port: int = Field(19092, ge=1, le=65535, description="Kafka client listener on 127.0.0.1.")
    kafka_controller_port: int = Field(19093, ge=1, le=65535, description="KRaft controller listener.")
    kafka_heap: str = Field("768m", description="Broker JVM heap (-Xmx).")
    kafka_partitions: int = Field(6, ge=1, description="Default partitions for auto-created topics.")
    redis_port: int = Field(16379, ge=1, le=65535, description="redis-server port on 127.0.0.1.")
    start_timeout_s: float = Field(120.0, gt=0, description="How long `up` waits for each service.")

    @property
    def endpoints_file(self) -> Path:
        return self.state_dir / "endpoints.json"


def read_stack_endpoints(state_dir: Path | None = None) -> dict[str, Any]:
    """Endpoints of a running dev stack, or ``{}`` when none was started."""
    path = (state_dir or DevStackSettings().state_dir) / "endpoints.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class _StackEndpointsSource(PydanticBaseSettingsSource):
    """Settings source that fills endpoint fields from the running dev stack's endpoints file."""

    def __init__(self, settings_cls: type[BaseSettings], section: str, mapping: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, Any] = {}
        stack = read_stack_endpoints().get(section, {})
        if isinstance(stack, dict):
            self._values = {field: stack[key] for field, key in mapping.items() if key in stack}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class _StackAwareSettings(BaseSettings):
    """Base for settings whose endpoints default to the running dev stack."""

    stack_section: ClassVar[str] = ""
    stack_mapping: ClassVar[dict[str, str]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        stack = _StackEndpointsSource(settings_cls, cls.stack_section, cls.stack_mapping)
        return init_settings, env_settings, dotenv_settings, file_secret_settings, stack


_S = TypeVar("_S", bound=BaseSettings)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


class KafkaSettings(_StackAwareSettings):
    """Kafka connection shared by the publisher, the worker and the CLI. Security passes through to clients."""

    model_config = SettingsConfigDict(env_prefix="COSTPLANE_KAFKA_", extra="ignore")
    stack_section: ClassVar[str] = "kafka"
    stack_mapping: ClassVar[dict[str, str]] = {"bootstrap_servers": "bootstrap"}

    bootstrap_servers: str = Field("127.0.0.1:19092", description="Comma-separated host:port list.")
    topic_prefix: str = Field("costplane", pattern=r"^[A-Za-z0-9._-]+$", description="Prefix of every topic.")
    security_protocol: SecurityProtocol = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 …")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret).")
    ssl_ca_location: Path | None = Field(None, description="CA bundle to verify the brokers.")
    ssl_certificate_location: Path | None = Field(None, description="Client certificate (mTLS).")
    ssl_key_location: Path | None = Field(None, description="Client private key (mTLS).")
    ssl_key_password: SecretStr | None = Field(None, description="Password of the client key (secret).")
    schema_registry_url: str | None = Field(None, description="Confluent Schema Registry; unset = schemaless.")

    def topic(self, name: str) -> str:
        """Full topic name, e.g. ``topic("usage")`` → ``costplane.usage``."""
        return f"{self.topic_prefix}.{name}"

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka properties (connection and security only; callers add their own tuning)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        optional_paths = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        conf.update({k: str(v) for k, v in optional_paths.items() if v is not None})
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf


class RedisSettings(_StackAwareSettings):
    """Redis used for decisions and live budget counters."""

    model_config = SettingsConfigDict(env_prefix="COSTPLANE_REDIS_", extra="ignore")
    stack_section: ClassVar[str] = "redis"
    stack_mapping: ClassVar[dict[str, str]] = {"url": "url"}

    url: SecretStr = Field(SecretStr("redis://127.0.0.1:16379/0"), description="redis:// or rediss:// URL.")
    key_prefix: str = Field("cp", pattern=r"^[A-Za-z0-9._-]+$", description="Prefix of every key.")
    timeout_ms: int = Field(50, gt=0, description="Socket timeout of the in-app guard.")
    cluster: bool = Field(
        False, description="The URL names one seed node of a Redis Cluster (the guard and the worker route by key)."
    )


class ClickHouseSettings(_StackAwareSettings):
    """ClickHouse: a server by URL, or embedded chDB in a directory owned by one process."""

    model_config = SettingsConfigDict(env_prefix="COSTPLANE_CLICKHOUSE_", extra="ignore")
    stack_section: ClassVar[str] = "clickhouse"
    stack_mapping: ClassVar[dict[str, str]] = {"chdb_path": "chdb_path"}

    url: str | None = Field(None, description="http(s)://user@host:port of a server; unset = embedded chDB.")
    password: SecretStr | None = Field(None, description="Server password (secret).")
    database: str = Field("costplane", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Database name.")
    chdb_path: Path = Field(
        default_factory=lambda: default_state_dir() / "clickhouse",
        description="Embedded chDB directory (default: `clickhouse` in the dev state directory).",
    )
    raw_ttl_days: int = Field(0, ge=0, description="TTL of raw usage events; 0 keeps them forever.")

    @field_validator("chdb_path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @property
    def dsn(self) -> str:
        """A display-safe DSN (never carries the password)."""
        return self.url if self.url else f"chdb://{self.chdb_path}"


class PricingSettings(BaseSettings):
    """Which price catalog is in force."""

    model_config = SettingsConfigDict(env_prefix="COSTPLANE_PRICING_", extra="ignore")

    catalog: Path | None = Field(None, description="Catalog file (costplane or LiteLLM format); unset = shipped.")
    overrides: Path | None = Field(
        None, description="Overrides file (YAML/JSON): negotiated discounts and custom models; unset = none."
    )


class ReportSettings(BaseSettings):
    """What the savings reports and the advisor assume about this organisation's traffic."""

    model_config = SettingsConfigDict(env_prefix="COSTPLANE_REPORTS_", extra="ignore")

    routing_file: Path | None = Field(
        None, description="YAML map of model patterns to the cheaper model to suggest; unset = the shipped defaults."
    )
    background_features: str = Field(
        "", description="Comma-separated features that run in the background (batch-tier candidates)."
    )
    batch_envs: str = Field("batch,jobs,offline", description="Comma-separated environments of background jobs.")
    production_envs: str = Field("prod,production", description="Comma-separated production environments.")
    advise_floor_usd: Decimal = Field(
        Decimal(1), ge=0, description="The advisor lists nothing saving less than this many USD a month."
    )


class PublisherSettings(BaseSettings):
    """The in-app usage publisher: batching, delivery and the local spool."""

    model_config = SettingsConfigDict(env_prefix="COSTPLANE_PUBLISHER_", extra="ignore")

    max_batch_events: int = Field(100, ge=1, le=10_000, description="Flush a tenant's batch at this many events.")
    max_batch_bytes: int = Field(256 * 1024, ge=1024, description="Flush a tenant's batch at about this many bytes.")
    linger_ms: float = Field(20.0, ge=0, description="Flush a tenant's batch this long after its first event.")
    max_buffered_events: int = Field(100_000, ge=100, description="Events held in memory before spilling to spool.")
    max_buffered_bytes: int = Field(
        64 * 1024 * 1024, ge=64 * 1024, description="Estimated event bytes held in memory before spilling to spool."
    )
    delivery_timeout_ms: int = Field(10_000, ge=1000, description="How long the client retries before spooling.")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "lz4", description="Kafka compression codec: none, gzip, snappy, lz4 or zstd."
    )
    spool_dir: Path = Field(
        default_factory=default_spool_dir,
        description="Durable spool directory for messages the broker could not take "
        "(default: `spool` in `COSTPLANE_DEV_STATE_DIR` when set).",
    )
    spool_max_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024, description="Spool size cap.")
    spool_fsync: Literal["roll", "always", "never"] = Field("roll", description="Spool fsync policy.")
    spool_when_full: Literal["drop_oldest", "refuse_newest"] = Field("drop_oldest", description="At the cap.")
    probe_interval_s: float = Field(1.0, gt=0, description="How often a spooling publisher checks the broker.")
    close_timeout_s: float = Field(10.0, gt=0, description="How long close() waits for deliveries.")


def load_settings(cls: type[_S], **overrides: Any) -> _S:
    """Build a settings object, turning validation errors into one readable ``ConfigError``."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = [f"invalid configuration for {cls.__name__}:"]
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {prefix}{field.upper()}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


AlertSeverityName = Literal["info", "warning", "critical"]


class AlertSettings(BaseSettings):
    """Alert lifecycle timing and delivery: Slack, PagerDuty Events v2 and generic JSON webhooks."""

    model_config = SettingsConfigDict(env_prefix="COSTPLANE_ALERTS_", extra="ignore")

    slack_webhook_url: SecretStr | None = Field(None, description="Slack incoming-webhook URL (secret); unset = off.")
    slack_min_severity: AlertSeverityName = Field("info", description="Lowest severity posted to Slack.")
    pagerduty_routing_key: SecretStr | None = Field(
        None, description="PagerDuty Events v2 integration key, 32 characters (secret); unset = off."
    )
    pagerduty_url: str = Field("https://events.pagerduty.com/v2/enqueue", description="PagerDuty Events v2 endpoint.")
    pagerduty_source: str = Field("costplane", min_length=1, description="payload.source of PagerDuty events.")
    pagerduty_min_severity: AlertSeverityName = Field("critical", description="Lowest severity that pages.")
    webhook_urls: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Generic JSON webhook URLs, comma-separated (secret)."
    )
    webhook_min_severity: AlertSeverityName = Field("info", description="Lowest severity sent to the webhooks.")
    routing_file: Path | None = Field(
        None,
        description="YAML/JSON file of named destinations (several Slack "
        "webhooks, PagerDuty keys, webhooks) and routes by tenant, team, feature, "
        "kind and severity (secret values inside; docs/alerts.md); unset = off.",
    )
    runbook_base_url: str | None = Field(
        None, description="Prefix that makes runbook links absolute, e.g. a docs site; unset = repo-relative."
    )
    resolve_after_s: float = Field(120.0, ge=0, description="A condition must stay clear this long to resolve.")
    cooldown_s: float = Field(
        600.0, ge=0, description="After a resolve, the same condition does not page again for this long."
    )
    stale_after_s: float = Field(600.0, ge=0, description="An open condition no longer reported resolves after this.")
    max_tracked: int = Field(10_000, ge=1, description="Dedup keys the lifecycle remembers (bounded memory).")
    retries: int = Field(5, ge=0, description="Retries per delivery after the first attempt.")
    backoff_base_s: float = Field(0.5, gt=0, description="First retry delay; doubles per retry (with jitter).")
    backoff_max_s: float = Field(30.0, gt=0, description="Largest retry delay.")
    max_retry_after_s: float = Field(120.0, ge=0, description="Cap on a receiver's Retry-After.")
    timeout_s: float = Field(5.0, gt=0, description="HTTP timeout of one delivery attempt.")
    queue_size: int = Field(1000, ge=1, description="Alerts queued per target before new ones are dead letters.")
    evaluate_interval_s: float = Field(
        1.0, gt=0, description="How often the stream worker evaluates detectors and its own conditions."
    )
    dead_letters_per_minute: int = Field(
        100, ge=1, description="A tenant's dead letters per minute that make a dead_letter_flood alert."
    )
    dead_letter_window_s: float = Field(
        60.0, ge=1, description="Window over which dead letters per minute are measured (processing time)."
    )
    fail_open_critical_s: float = Field(
        60.0, ge=0, description="A fail_open alert escalates from warning to critical after this long."
    )
    state_ttl_s: float = Field(
        86_400.0,
        gt=0,
        description="Expiry of the per-tenant alert state (baselines, open "
        "incidents) the stream worker keeps in Redis.",
    )

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value


WorkerRole = Literal["stream", "sink", "all"]


class WorkerSettings(BaseSettings):
    """The stream worker (``costplane worker``): role, consumer groups, batching, dead-letter limits, web port."""

    model_config = SettingsConfigDict(env_prefix="COSTPLANE_WORKER_", extra="ignore")

    role: WorkerRole = Field("all", description="stream (pricing, windows, decisions), sink (ClickHouse) or all.")
    web_host: str = Field("127.0.0.1", description="Interface of the health, metrics and report HTTP server.")
    web_port: int = Field(6066, ge=0, le=65535, description="Port of the health, metrics and report HTTP server.")
    group_id: str | None = Field(None, description="Consumer group of the stream role; unset = <topic_prefix>.worker.")
    usage_partitions: int = Field(6, ge=1, description="Partitions of the usage topic when the worker creates it.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of topics the worker creates.")
    dlq_retention_ms: int = Field(14 * 24 * 3600 * 1000, ge=60_000, description="Retention of the dead-letter topic.")
    batch_max_messages: int = Field(100, ge=1, description="Messages taken per stream batch (stream.take).")
    batch_within_s: float = Field(0.05, gt=0, description="Longest wait to fill a stream batch.")
    fetch_max_wait_ms: int = Field(
        100,
        ge=1,
        le=1500,
        description="Longest the broker holds the stream "
        "consumer's fetch for idle partitions (Faust's own is 1500 ms; records of a busy "
        "partition can wait behind it).",
    )
    max_clock_skew_ms: int = Field(
        24 * 3600 * 1000,
        ge=0,
        description="Events whose occurred_at is more than this after their Kafka record's timestamp are "
        "dead-lettered (clock_skew) and not written to ClickHouse; older events are always accepted.",
    )
    invalid_ratio_limit: float = Field(0.5, gt=0, le=1, description="Stop when invalid/total passes this ratio.")
    invalid_window_s: float = Field(60.0, gt=0, description="Window over which the invalid ratio is measured.")
    invalid_min_events: int = Field(1000, ge=1, description="Events needed in the window before the ratio counts.")
    recent_ids_per_partition: int = Field(
        100_000,
        ge=1000,
        description="Recent event ids kept per partition for "
        "window dedup (at least this many, at most about four thirds of it).",
    )
    window_cache_keys: int = Field(
        200_000, ge=1000, description="Budget window states the stream role caches in memory (Redis holds them all)."
    )
    gc_threshold: int = Field(
        200_000,
        ge=700,
        description="Net new container objects between young-generation "
        "garbage collections (Python's default is 700). A stream batch keeps tens of thousands "
        "alive while it is computed, and each collection walks them all again.",
    )
    malloc_mmap_threshold_kib: int = Field(
        128,
        ge=0,
        le=32_768,
        description="glibc: blocks of this size and more "
        "are mapped on their own and unmapped when freed, instead of the dynamic "
        "threshold that leaves freed tables resident in the heap; 0 = glibc's "
        "default.",
    )
    malloc_trim_s: float = Field(
        30.0,
        ge=0,
        description="glibc: every this many seconds the worker returns the heap's "
        "free pages to the system (malloc_trim); 0 = never.",
    )
    sink_nice: int = Field(
        5,
        ge=0,
        le=19,
        description="How much lower the sink's CPU priority is than the stream "
        "role's (nice value; the sink process, or the sink thread with role all). Decisions keep "
        "their latency when both share cores; 0 = same priority.",
    )
    sink_max_events: int = Field(10_000, ge=1, description="Sink flush at this many buffered events.")
    sink_max_age_s: float = Field(1.0, gt=0, description="Sink flush when the oldest buffered event waited this long.")
    data_dir: Path = Field(
        default_factory=lambda: default_state_dir() / "worker",
        description="Where the worker "
        "keeps its local files: Faust's data directory, one folder per consumer group (default: "
        "`worker` in the dev state directory). Window states live in Redis, so nothing here "
        "needs a backup.",
    )
    session_timeout_s: float = Field(
        10.0, ge=6, description="Kafka consumer session timeout (rebalance speed; brokers refuse below 6 s)."
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token every /api/* request must carry (secret); "
        "unset = the API answers anyone who reaches web_host. Required (or "
        "api_tenant_tokens) when web_host is not a loopback address.",
    )
    api_tenant_tokens: SecretStr | None = Field(
        None,
        description="Tenant-scoped API tokens, `tenant=token,...` "
        "(secret; tokens of 16+ characters): a request with one reads only "
        "its tenant.",
    )
    drift_check_s: float = Field(
        60.0,
        ge=0,
        description="Sink role: every this many seconds, compare each budget "
        "counter in Redis with the ClickHouse ledger and export the drift as metrics; "
        "0 = off.",
    )


def settings_classes() -> list[type[BaseSettings]]:
    """Every component's settings class (those with a ``COSTPLANE_*`` prefix), in the order this module defines
    them: for ``config show``, the variable reference and the secrets the output redactor masks."""
    import inspect
    import sys

    module = sys.modules[__name__]
    found = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseSettings) and obj.__module__ == __name__ and obj.model_config.get("env_prefix")
    ]
    return sorted(found, key=lambda cls: inspect.getsourcelines(cls)[1])
