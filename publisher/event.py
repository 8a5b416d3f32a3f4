"""The UsageEvent model: one model-call attempt, mirroring ``schemas/usage_event.avsc`` field for field.

A plain slotted dataclass so the publisher's hot path (construct, validate, append) costs microseconds.
``occurred_at`` is kept as integer UTC epoch milliseconds — exactly what the Avro ``timestamp-millis`` carries —
so no datetime is built per event; use :func:`to_millis` / :func:`from_millis` at the edges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

AttemptStatus = Literal["ok", "error", "timeout", "rate_limited", "invalid_output", "cancelled"]
Operation = Literal["chat", "completion", "embedding", "image", "audio", "rerank", "other"]
ServiceTier = Literal["standard", "batch", "priority", "flex"]

STATUSES: frozenset[str] = frozenset(get_args(AttemptStatus))
OPERATIONS: frozenset[str] = frozenset(get_args(Operation))
SERVICE_TIERS: frozenset[str] = frozenset(get_args(ServiceTier))

#: The disjoint token buckets, in schema order. Prompt size = the first three.
TOKEN_BUCKETS: tuple[str, ...] = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


@dataclass(slots=True)
class UsageEvent:
    """One attempt of one model call and the tokens it was billed for (buckets are disjoint)."""

    event_id: str
    occurred_at: int  # UTC epoch milliseconds
    tenant: str
    provider: str
    model: str
    request_id: str
    attempt: int
    status: str
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    operation: str | None = None
    service_tier: str | None = None
    user_id: str | None = None
    team: str | None = None
    feature: str | None = None
    env: str | None = None
    session_id: str | None = None
    turn: int | None = None
    plan: str | None = None
    system_prompt_tokens: int | None = None
    max_tokens: int | None = None
    latency_ms: int | None = None
    tokens_estimated: bool | None = None
    result_cache_hit: bool | None = None
    content_hash: str | None = None
    billed_cost_nanos: int | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def prompt_tokens(self) -> int:
        """Prompt size as providers count it for long-context tiers."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens + self.reasoning_tokens

    def to_dict(self) -> dict[str, Any]:
        """Schema-shaped dict (``occurred_at`` stays epoch millis)."""
        return asdict(self)


def to_millis(moment: datetime) -> int:
    """UTC epoch milliseconds of an aware datetime (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def from_millis(millis: int) -> datetime:
    """Aware UTC datetime from epoch milliseconds."""
    return datetime.fromtimestamp(millis / 1000, tz=UTC)
