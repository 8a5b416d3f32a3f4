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
    """Recently seen ``event_id`` sets, one ring per partition; dropped when the partition is revoked.

    A ring of ``generations`` plain sets per partition: ids go into the newest one, and when it holds its share
    (``share = ceil(per_partition / (generations - 1))``) a new one starts and the oldest is dropped whole. So at
    least the last ``per_partition`` ids of a partition are always remembered and never more than ``generations ×
    share - 1`` (about ``generations / (generations - 1)`` times ``per_partition``) — cheaper in memory and time
    than an ordered FIFO, which paid a linked-list node per id and an eviction per insert. Why more than two
    generations: with two, the set swung between one and two times ``per_partition`` ids and freed a whole
    ``per_partition`` of them at once, a swing of tens of MiB per partition that the allocators keep; four keep the
    swing to a third of it, for a few more set lookups per event.
    """

    def __init__(self, per_partition: int, generations: int = 4) -> None:
        if generations < 2:
            raise ValueError("generations must be >= 2")
        self.per_partition = per_partition
        self._share = -(-per_partition // (generations - 1))
        self._generations = generations
        self._rings: dict[int, list[set[str]]] = {}

    def first_time(self, partition: int, event_id: str) -> bool:
        """True the first time ``event_id`` is seen on ``partition`` (and remember it)."""
        ring = self._rings.get(partition)
        if ring is None:
            ring = self._rings[partition] = [set()]
        for ids in reversed(ring):  # newest first: a duplicate is usually seconds behind its original
            if event_id in ids:
                return False
        newest = ring[-1]
        newest.add(event_id)
        if len(newest) >= self._share:
            ring.append(set())
            if len(ring) > self._generations:
                del ring[0]
        return True

    def forget(self, partition: int) -> None:
        self._rings.pop(partition, None)

    def held(self) -> dict[int, int]:
        """Ids held per partition (what ``costplane_worker_recent_ids`` reports: the set is full at
        ``per_partition`` and stays within about four thirds of it)."""
        return {partition: sum(len(ids) for ids in ring) for partition, ring in self._rings.items()}
