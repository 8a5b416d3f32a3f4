"""Price decoded events once, with the catalog version in force at each event's ``occurred_at``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent


def price_events(catalog: Any, events: Iterable[UsageEvent]) -> list[PricedEvent]:
    """PricedEvents in input order; an app-side cache hit costs nothing; unknown models are kept, flagged."""
    out: list[PricedEvent] = []
    for ev in events:
        cost = catalog.price_event(ev)
        nanos = 0 if ev.result_cache_hit else cost.cost_nanos
        out.append(PricedEvent(ev, nanos, cost.price_version, cost.unpriced))
    return out
