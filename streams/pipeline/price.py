"""Step 3: price each fresh event at its own ``occurred_at`` and place it at its record's partition and offset.

The location is what fences the window commit: an event is counted once per (partition, offset), whatever the
redeliveries.
"""

from __future__ import annotations

from typing import Any

from costplane.streams.pipeline.dedup import Fresh
from costplane.streams.worker.metrics import WorkerMetrics
from costplane.streams.worker.pricing import price_events
from costplane.streams.worker.windows import Located


def price(catalog: Any, fresh: Fresh, metrics: WorkerMetrics) -> list[Located]:
    """Priced events with their source location; events of models without a price are counted as unpriced."""
    located: list[Located] = []
    for record, events in fresh:
        for priced in price_events(catalog, events):
            if priced.unpriced:
                metrics.unpriced.inc()
            located.append(Located(priced, record.partition, record.offset))
    return located
