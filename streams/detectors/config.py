"""Detector thresholds: one :class:`DetectorConfig` per tenant (or the default), parsed and validated from JSON/YAML.

Why a module of its own: the same settings are read by the worker (from the compacted detectors topic), written by
the CLI (``costplane detectors set/apply``) and judged by every detector, and a value the worker would choke on must
be refused where it is typed, with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from costplane.publisher.event import UsageEvent

#: Dimension names that differ from the event's field names (``user`` means ``user_id``).
ATTR = {"user": "user_id"}


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds of every detector; the defaults are the practitioners' numbers. One per tenant if needed.

    Money is integer nano-USD, ratios are exact decimals. ``dimensions`` name UsageEvent fields (``user`` means
    ``user_id``) that, with the tenant, make the subject of the per-minute detectors.
    """

    dimensions: tuple[str, ...] = ("feature", "model")
    min_attempts: int = 20  # per subject-minute, below which ratios and spikes are not judged
    retry_ratio: Decimal = Decimal("0.05")
    min_retries: int = 10  # at ~1 % ordinary failures, 5 retries in ~100 attempts happen by chance every hour
    runaway_attempts: int = 10  # more attempts than this for one request_id
    session_turns: int = 8  # prompt grew on each of this many consecutive turns …
    session_growth: Decimal = Decimal(4)  # … to at least this multiple of the first …
    session_min_prompt_tokens: int = 20_000  # … and at least this big
    spike_factor: Decimal = Decimal(2)
    spike_sigmas: Decimal = Decimal(4)  # and this many learnt standard deviations above the baseline (noise guard)
    spike_floor_nanos: int = 100_000_000  # a cost spike needs at least $0.10 in the minute
    token_spike_floor: int = 200_000  # a tokens-per-minute spike needs at least this many tokens
    ewma_alpha: Decimal = Decimal("0.1")
    warmup_minutes: int = 10  # minutes of history before a baseline is trusted
    cache_hit_floor: Decimal = Decimal("0.5")
    cache_drop_points: Decimal = Decimal("0.15")  # and at least this far below the usual rate
    cache_min_prompt_tokens: int = 50_000  # per subject-minute (small samples swing by tens of points)
    user_share: Decimal = Decimal("0.01")  # of the tenant's daily budget
    user_share_users: int = 10_000  # the biggest spenders tracked per tenant and day (at most twice this many)
    forecast_min_elapsed_ms: int = 86_400_000  # no month forecast before a day of the month has passed
    price_mismatch_ratio: Decimal = Decimal("0.05")  # billed differs from computed by at least this share …
    price_mismatch_minutes: int = 60  # … over the events of this many recent minutes …
    price_mismatch_min_events: int = 20  # … that carry a provider-billed cost, at least this many
    clear_report_minutes: int = 10
    idle_evict_minutes: int = 60
    request_ttl_ms: int = 600_000
    session_ttl_ms: int = 3_600_000
    max_requests: int = 100_000
    max_sessions: int = 100_000
    grace_ms: int = 5_000
    top_contributors: int = 5
    #: The biggest contributors kept per subject and minute by each ranking (cost, tokens, retries); at most four
    #: times this many are held, so a minute with a million users costs the same memory as one with a thousand.
    contributors_tracked: int = 200

    def __post_init__(self) -> None:
        if self.user_share_users < 1:
            raise ValueError("user_share_users must be >= 1")
        if self.top_contributors < 0:  # a minute's trim keeps the top N of each ranking: N must be a count
            raise ValueError("top_contributors must be >= 0")
        if self.contributors_tracked < self.top_contributors:
            raise ValueError("contributors_tracked must be >= top_contributors")
        if self.min_attempts < 1 or self.runaway_attempts < 1 or self.session_turns < 2:
            raise ValueError("min_attempts and runaway_attempts must be >= 1, session_turns >= 2")
        if not 0 < self.ewma_alpha <= 1 or self.spike_factor <= 1:
            raise ValueError("ewma_alpha must be in (0, 1] and spike_factor > 1")
        if min(self.grace_ms, self.clear_report_minutes, self.idle_evict_minutes, self.warmup_minutes) < 0:
            raise ValueError("times must be >= 0")
        if self.cache_min_prompt_tokens < 1 or self.price_mismatch_minutes < 1:  # a rate of zero prompt tokens
            raise ValueError("cache_min_prompt_tokens and price_mismatch_minutes must be >= 1")
        if not self.dimensions:
            raise ValueError("dimensions must name at least one event field")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: DetectorConfig | None = None) -> DetectorConfig:
        """Overrides from settings, the detectors topic or a YAML block (decimals as strings, dimensions as a
        list), on top of ``base`` (the defaults when None). Any bad name or value raises ``ValueError`` naming it."""
        return replace_config(base or cls(), parse_overrides(values))

    def to_mapping(self) -> dict[str, Any]:
        """Every field as JSON-ready values (decimals as strings, dimensions as a list): what ``show`` prints."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            out[name] = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Decimal) else value
        return out


DEFAULTS = DetectorConfig()
FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DetectorConfig))


def replace_config(base: DetectorConfig, overrides: Mapping[str, Any]) -> DetectorConfig:
    """``base`` with parsed ``overrides``; the combination is validated as a whole (``ValueError`` when not)."""
    values = {name: getattr(base, name) for name in FIELDS} | dict(overrides)
    return DetectorConfig(**values)


def parse_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values of the named settings; unknown names and values of the wrong kind raise ``ValueError``."""
    if not isinstance(values, Mapping):
        raise ValueError(f"detector settings must be a mapping of name to value, not {type(values).__name__}")
    return {str(name): parse_value(str(name), value) for name, value in values.items()}


def parse_value(name: str, value: Any) -> Any:
    """One setting's value in the type of its default: an integer, an exact decimal, or a list of field names."""
    if name not in FIELDS:
        raise ValueError(f"unknown detector setting {name[:80]!r} (`costplane detectors show` lists them)")
    default = getattr(DEFAULTS, name)
    if isinstance(default, Decimal):
        return _decimal(name, value)
    if isinstance(default, tuple):
        return _dimensions(name, value)
    return _integer(name, value)


def _decimal(name: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"{name} must be a decimal number, not {value!r}")
    try:
        out = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{name} must be a decimal number, not {value!r}") from None
    if not out.is_finite():
        raise ValueError(f"{name} must be a finite decimal number, not {value!r}")
    return out


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip().replace("_", "") if isinstance(value, str | float | Decimal) else None
    try:
        number = Decimal(text) if text else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or number != number.to_integral_value():
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    return int(number)


def _dimensions(name: str, value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) and v.strip() for v in items):
        raise ValueError(f"{name} must be a list of event field names, not {value!r}")
    out = tuple(v.strip() for v in items)
    known = {f.name for f in fields(UsageEvent)} | set(ATTR)
    unknown = [d for d in out if ATTR.get(d, d) not in known]
    if unknown:
        raise ValueError(f"{name}: {', '.join(unknown)} not a usage event field")
    return out


class TenantConfigs:
    """The thresholds in force: a default and per-tenant overrides (each a whole :class:`DetectorConfig`)."""

    def __init__(self, default: DetectorConfig | None = None, configs: Mapping[str, DetectorConfig] | None = None):
        self.default = default or DetectorConfig()
        self.tenants: dict[str, DetectorConfig] = dict(configs or {})

    def __call__(self, tenant: str) -> DetectorConfig:
        return self.tenants.get(tenant, self.default)

    def set(self, tenant: str, config: DetectorConfig | None) -> None:
        if config is None:
            self.tenants.pop(tenant, None)
        else:
            self.tenants[tenant] = config
