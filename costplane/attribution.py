"""Exact spend attribution over priced events: who spent what, and how much of it went on failed attempts.

Pure (plain data in, rows out) and exact: costs are integer nano-USD sums, turned into decimal strings only for
display. Events are counted once per ``event_id`` however often they were delivered.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from costplane.publisher.event import TOKEN_BUCKETS, UsageEvent

NANOS_PER_USD = Decimal(1_000_000_000)


def nanos_to_usd(nanos: int) -> str:
    """Exact decimal string of an integer nano-USD amount."""
    return str((Decimal(nanos) / NANOS_PER_USD).normalize()) if nanos else "0"


def usd_display(nanos: int, places: int = 4) -> str:
    """Rounded (half-even) for tables; JSON output keeps the exact :func:`nanos_to_usd` string."""
    return str((Decimal(nanos) / NANOS_PER_USD).quantize(Decimal(1).scaleb(-places)))


@dataclass(slots=True)
class SpendRow:
    """Totals for one group; ``failed_cost_nanos`` is spend on attempts that did not succeed."""

    key: tuple[str, ...]
    events: int = 0
    retries: int = 0
    failed: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_BUCKETS, 0))
    cost_nanos: int = 0
    failed_cost_nanos: int = 0
    unpriced: int = 0


def attribute(priced: Iterable[tuple[UsageEvent, int, bool]], by: Sequence[str]) -> list[SpendRow]:
    """Group ``(event, cost_nanos, unpriced)`` by the event fields in ``by``; duplicates of an event_id count once.

    Rows come back sorted by cost, largest first.
    """
    rows: dict[tuple[str, ...], SpendRow] = {}
    seen: set[str] = set()
    for event, cost, unpriced in priced:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        key = tuple(str(getattr(event, dim) or "-") for dim in by)
        row = rows.get(key)
        if row is None:
            row = rows[key] = SpendRow(key)
        row.events += 1
        row.retries += event.attempt > 1
        row.cost_nanos += cost
        row.unpriced += unpriced
        if event.status != "ok":
            row.failed += 1
            row.failed_cost_nanos += cost
        for bucket in TOKEN_BUCKETS:
            row.tokens[bucket] += getattr(event, bucket)
    return sorted(rows.values(), key=lambda r: (-r.cost_nanos, r.key))
