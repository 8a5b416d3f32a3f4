"""Pure transformation: priced events → ClickHouse row tuples, dedup within a batch, rollup aggregation.

No I/O here, so the row shapes and the arithmetic are unit-tested without ClickHouse. Rollups are computed
from *raw row tuples* (not from PricedEvents) so the writer derives them the same way in the normal path and
when it recovers an interrupted batch by reading its raw rows back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Literal

from costplane.pricing.ledger import NOTHING, LedgerAmounts
from costplane.publisher.event import TOKEN_BUCKETS
from costplane.sql.rollups import ROLLUP_DIMENSIONS
from costplane.streams.core.priced import PricedEvent

Granularity = Literal["minute", "hour", "day"]
GRANULARITIES: tuple[Granularity, ...] = ("minute", "hour", "day")
_BUCKET_MS: dict[Granularity, int] = {"minute": 60_000, "hour": 3_600_000, "day": 86_400_000}

#: Raw table columns in insert order (``sql/migrations/0001_usage_events.sql``).
RAW_COLUMNS: tuple[str, ...] = (
    "event_id",
    "occurred_at",
    "tenant",
    "provider",
    "model",
    "request_id",
    "attempt",
    "status",
    *TOKEN_BUCKETS,
    "operation",
    "service_tier",
    "user_id",
    "team",
    "feature",
    "env",
    "session_id",
    "turn",
    "plan",
    "system_prompt_tokens",
    "max_tokens",
    "latency_ms",
    "tokens_estimated",
    "result_cache_hit",
    "content_hash",
    "billed_cost_nanos",
    "attributes",
    "cost_nanos",
    "price_version",
    "unpriced",
    "ingested_at",
    "sink_batch_id",
    "kafka_partition",
    "kafka_offset",
    "input_cost_nanos",
    "cache_saved_nanos",
    "system_prompt_cost_nanos",
    "uncached_prefix_tokens",
    "uncached_prefix_cost_nanos",
    "prefix_cache_saving_nanos",
    "result_cache_avoided_nanos",
)
_I = {name: i for i, name in enumerate(RAW_COLUMNS)}

SEEN_COLUMNS: tuple[str, ...] = ("event_id", "tenant", "kafka_partition", "kafka_offset", "sink_batch_id", "marked_at")

#: Per-event amounts the sink computes when it prices an event (``costplane.pricing.ledger``), stored on raw rows.
LEDGER_COLUMNS: tuple[str, ...] = LedgerAmounts._fields

#: What every rollup row sums (``sql/migrations/0005_report_rollups.sql``), then first_at / last_at.
ROLLUP_MEASURES: tuple[str, ...] = (
    "requests",
    "retried_requests",
    "attempts",
    "retries",
    "failed_attempts",
    *TOKEN_BUCKETS,
    "failed_tokens",
    "cost_nanos",
    "failed_cost_nanos",
    "unpriced_attempts",
    "unpriced_tokens",
    "input_cost_nanos",
    "cache_saved_nanos",
    "system_prompt_tokens",
    "system_prompt_cost_nanos",
    "uncached_prefix_tokens",
    "uncached_prefix_cost_nanos",
    "prefix_cache_saving_nanos",
    "result_cache_hits",
    "result_cache_avoided_nanos",
)


@dataclass(frozen=True, slots=True)
class RollupFamily:
    """A set of rollup tables (one per granularity) keyed by ``dimensions``, all summing :data:`ROLLUP_MEASURES`."""

    name: str
    dimensions: tuple[str, ...]

    def table(self, granularity: Granularity) -> str:
        return f"rollup_{self.name}_{granularity}"

    @property
    def columns(self) -> tuple[str, ...]:
        return ("bucket", *self.dimensions, *ROLLUP_MEASURES, "first_at", "last_at")


#: The rollup families the sink writes and the reports read.
SPEND = RollupFamily("spend", ROLLUP_DIMENSIONS["spend"])
USERS = RollupFamily("users", ROLLUP_DIMENSIONS["users"])
FAMILIES: tuple[RollupFamily, ...] = (SPEND, USERS)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Pending:
    """A priced event waiting in the sink's buffer, with where it came from and its per-event report amounts."""

    priced: PricedEvent
    partition: int
    offset: int
    ledger: LedgerAmounts = NOTHING


def dedup_batch(items: Iterable[Pending]) -> list[Pending]:
    """Keep the first occurrence of each event_id (a redelivered copy carries the same event and cost)."""
    seen: set[str] = set()
    kept: list[Pending] = []
    for item in items:
        event_id = item.priced.event.event_id
        if event_id not in seen:
            seen.add(event_id)
            kept.append(item)
    return kept


def _utc(millis: int) -> datetime:
    """Aware UTC datetime of epoch millis, exactly (no float on the way)."""
    return _EPOCH + timedelta(milliseconds=millis)


def raw_row(item: Pending, batch_id: str, ingested_at: datetime) -> tuple[Any, ...]:
    """One raw table row, in :data:`RAW_COLUMNS` order."""
    e = item.priced.event
    return (
        e.event_id,
        _utc(e.occurred_at),
        e.tenant,
        e.provider,
        e.model,
        e.request_id,
        e.attempt,
        e.status,
        e.input_tokens,
        e.cached_input_tokens,
        e.cache_write_tokens,
        e.output_tokens,
        e.reasoning_tokens,
        e.operation,
        e.service_tier,
        e.user_id,
        e.team,
        e.feature,
        e.env,
        e.session_id,
        e.turn,
        e.plan,
        e.system_prompt_tokens,
        e.max_tokens,
        e.latency_ms,
        e.tokens_estimated,
        e.result_cache_hit,
        e.content_hash,
        e.billed_cost_nanos,
        dict(e.attributes),
        item.priced.cost_nanos,
        item.priced.price_version,
        item.priced.unpriced,
        ingested_at,
        batch_id,
        item.partition,
        item.offset,
        *item.ledger,
    )


def seen_rows(rows: Sequence[tuple[Any, ...]], marked_at: datetime) -> list[tuple[Any, ...]]:
    """``seen_event_ids`` rows for raw rows (one unpartitioned block per insert, so no ordering is needed)."""
    i_id, i_tenant, i_part, i_off, i_batch = (
        _I["event_id"],
        _I["tenant"],
        _I["kafka_partition"],
        _I["kafka_offset"],
        _I["sink_batch_id"],
    )
    return [(r[i_id], r[i_tenant], r[i_part], r[i_off], r[i_batch], marked_at) for r in rows]


def _millis(value: datetime) -> int:
    """Exact epoch millis of a datetime read back from ClickHouse (naive means UTC) or built here (aware)."""
    delta = value - (_EPOCH_NAIVE if value.tzinfo is None else _EPOCH)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _canonical(key: tuple[int, tuple[Any, ...]]) -> tuple[int, str]:
    """The order rollup rows are inserted in: any fixed order does, and one string compares much faster than a
    tuple. (Two keys join equal only if a value holds the unit separator; they keep their input order.)"""
    return key[0], "\x1f".join(map(str, key[1]))


def _measures(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Each raw row's contribution to every rollup, in :data:`ROLLUP_MEASURES` order plus first_at, last_at."""
    tokens_of = itemgetter(*[_I[b] for b in TOKEN_BUCKETS])
    ledger_of = itemgetter(*[_I[c] for c in LEDGER_COLUMNS])
    i_at, i_status, i_cost, i_attempt, i_unpriced, i_system, i_hit = (
        _I["occurred_at"],
        _I["status"],
        _I["cost_nanos"],
        _I["attempt"],
        _I["unpriced"],
        _I["system_prompt_tokens"],
        _I["result_cache_hit"],
    )
    out: list[list[Any]] = []
    for r in rows:
        # Raw rows hold ints and str-or-None already (built here, or read back from ClickHouse).
        failed = r[i_status] != "ok"
        unpriced = bool(r[i_unpriced])
        cost = r[i_cost]
        attempt = r[i_attempt]
        tokens = tokens_of(r)
        total = sum(tokens)
        (input_cost, cache_saved, system_cost, prefix_tokens, prefix_cost, prefix_saving, avoided) = ledger_of(r)
        at = _utc(_millis(r[i_at]))
        out.append(
            [
                1 if attempt == 1 else 0,
                1 if attempt == 2 else 0,
                1,
                1 if attempt > 1 else 0,
                1 if failed else 0,
                *tokens,
                total if failed else 0,
                cost,
                cost if failed else 0,
                1 if unpriced else 0,
                total if unpriced else 0,
                input_cost,
                cache_saved,
                r[i_system] or 0,
                system_cost,
                prefix_tokens,
                prefix_cost,
                prefix_saving,
                1 if r[i_hit] else 0,
                avoided,
                at,
                at,
            ]
        )
    return out


def _merge(a: list[Any], b: list[Any]) -> list[Any]:
    """Two measure lists summed (first_at the earlier, last_at the later); neither is changed."""
    merged = [x + y for x, y in zip(a[:-2], b[:-2], strict=True)]
    merged.append(min(a[-2], b[-2]))
    merged.append(max(a[-1], b[-1]))
    return merged


def rollup_rows(
    rows: Sequence[tuple[Any, ...]], granularity: Granularity, family: RollupFamily = SPEND
) -> list[tuple[Any, ...]]:
    """Aggregate raw rows into one rollup row per bucket × dimensions, in ``family.columns`` order."""
    return rollup_all(rows, (granularity,))[family.name][granularity]


def rollup_all(
    rows: Sequence[tuple[Any, ...]],
    granularities: Sequence[Granularity] = GRANULARITIES,
    families: Sequence[RollupFamily] = FAMILIES,
) -> dict[str, dict[Granularity, list[tuple[Any, ...]]]]:
    """Rollup rows of every family and granularity: one pass per family for the finest, then coarsen.

    Integer sums only, so coarsening minute sums into hours gives exactly the hour sums. Missing dimensions
    become ``""`` (the rollup sort key cannot be Nullable); ``unpriced`` is 0 or 1. Each list is sorted, so the
    same raw rows always give the same insert blocks.
    """
    measures = _measures(rows)
    i_at = _I["occurred_at"]
    bucket_ms = [_millis(r[i_at]) for r in rows]
    ordered = sorted(set(granularities), key=lambda g: _BUCKET_MS[g])
    out: dict[str, dict[Granularity, list[tuple[Any, ...]]]] = {}
    for family in families:
        dims_of = itemgetter(*[_I[d] for d in family.dimensions])
        has_unpriced = "unpriced" in family.dimensions
        finest = _BUCKET_MS[ordered[0]]
        acc: dict[tuple[int, tuple[Any, ...]], list[Any]] = {}
        for r, at_ms, contribution in zip(rows, bucket_ms, measures, strict=True):
            dims = tuple(["" if v is None else v for v in dims_of(r)])
            if has_unpriced:
                dims = (*dims[:-1], 1 if dims[-1] else 0)
            key = (at_ms // finest * finest, dims)
            sums = acc.get(key)
            acc[key] = contribution if sums is None else _merge(sums, contribution)
        per_granularity: dict[Granularity, list[tuple[Any, ...]]] = {}
        for g in ordered:
            size = _BUCKET_MS[g]
            if size != finest:
                coarser: dict[tuple[int, tuple[Any, ...]], list[Any]] = {}
                for (bucket, dims), sums in acc.items():
                    key = (bucket // size * size, dims)
                    have = coarser.get(key)
                    # Sums lists are never changed in place (a merge makes a new one), so they can be shared.
                    coarser[key] = sums if have is None else _merge(have, sums)
                acc, finest = coarser, size
            moments = {bucket: _utc(bucket) for bucket in {k[0] for k in acc}}
            per_granularity[g] = [(moments[k[0]], *k[1], *acc[k]) for k in sorted(acc, key=_canonical)]
        out[family.name] = per_granularity
    return out
