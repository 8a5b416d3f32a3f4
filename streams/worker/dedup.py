"""A bounded set of recently seen event ids per partition: producer duplicates must not count twice in a window.

Why in memory and per partition: usage is keyed by tenant, so a duplicate (a publisher retry, a spool replay)
lands on the same partition as its original, usually seconds later. Redelivery after a crash is handled exactly
by the per-partition offset fence stored with the windows (see :mod:`.windowstore`); this set only has to catch
duplicates that Kafka sees as distinct records, and a bounded FIFO per partition does that without a write per
event.
The ClickHouse totals do not depend on it: the sink deduplicates by event_id durably.
"""

from __future__ import annotations


class RecentIds:
    """Recently seen ``event_id`` sets, one per partition; dropped when the partition is revoked.

    Two generations of plain sets per partition: ids go into the current one, and when it holds ``per_partition``
    ids it becomes the previous one (the older generation is dropped whole). So at least the last
    ``per_partition`` ids of a partition are always remembered and never more than twice that — cheaper in memory
    and time than an ordered FIFO, which paid a linked-list node per id and an eviction per insert.
    """

    def __init__(self, per_partition: int) -> None:
        self.per_partition = per_partition
        self._sets: dict[int, tuple[set[str], set[str]]] = {}

    def first_time(self, partition: int, event_id: str) -> bool:
        """True the first time ``event_id`` is seen on ``partition`` (and remember it)."""
        pair = self._sets.get(partition)
        if pair is None:
            pair = self._sets[partition] = (set(), set())
        current, previous = pair
        if event_id in current or event_id in previous:
            return False
        current.add(event_id)
        if len(current) >= self.per_partition:
            self._sets[partition] = (set(), current)
        return True

    def forget(self, partition: int) -> None:
        self._sets.pop(partition, None)
