"""Step 2: drop events this worker has already seen on their partition (a producer retry, a redelivery).

The recent ids are kept per partition (:class:`~costplane.streams.worker.dedup.RecentIds`); what is forgotten
there is still counted once, because the window commit is fenced by source offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

from costplane.publisher.event import UsageEvent
from costplane.streams.pipeline.decode import Decoded
from costplane.streams.pipeline.records import Record
from costplane.streams.worker.dedup import RecentIds
from costplane.streams.worker.metrics import WorkerMetrics

Fresh = list[tuple[Record, Sequence[UsageEvent]]]


def drop_duplicates(recent: RecentIds, decoded: Decoded, metrics: WorkerMetrics) -> Fresh:
    """Each record with the events seen for the first time; the others are counted as duplicates."""
    firsts = recent.keep_fresh([(record.partition, events) for record, events in decoded.messages])
    metrics.duplicates.inc(decoded.valid - sum(map(len, firsts)))
    return [(record, fresh) for (record, _), fresh in zip(decoded.messages, firsts, strict=True)]
