"""A bounded set of recently seen event ids per partition: producer duplicates must not count twice in a window.

Why in memory and per partition: usage is keyed by tenant, so a duplicate (a publisher retry, a spool replay)
lands on the same partition as its original, usually seconds later. Redelivery after a crash is handled exactly
by the offsets stored inside each window value (see :mod:`.spend`); this set only has to catch duplicates that
Kafka sees as distinct records, and a bounded FIFO per partition does that without a changelog write per event.
The ClickHouse totals do not depend on it: the sink deduplicates by event_id durably.
"""

from __future__ import annotations

from collections import OrderedDict


class RecentIds:
    """FIFO-bounded ``event_id`` sets, one per partition; dropped when the partition is revoked."""

    def __init__(self, per_partition: int) -> None:
        self.per_partition = per_partition
        self._sets: dict[int, OrderedDict[str, None]] = {}

    def first_time(self, partition: int, event_id: str) -> bool:
        """True the first time ``event_id`` is seen on ``partition`` (and remember it)."""
        seen = self._sets.setdefault(partition, OrderedDict())
        if event_id in seen:
            return False
        seen[event_id] = None
        if len(seen) > self.per_partition:
            seen.popitem(last=False)
        return True

    def forget(self, partition: int) -> None:
        self._sets.pop(partition, None)
