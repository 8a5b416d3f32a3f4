"""A bounded set of recently seen event ids per partition: producer duplicates must not count twice in a window.

Why in memory and per partition: usage is keyed by tenant, so a duplicate (a publisher retry, a spool replay)
lands on the same partition as its original, usually seconds later. Redelivery after a crash is handled exactly
by the per-partition offset fence stored with the windows (see :mod:`.windowstore`); this set only has to catch
duplicates that Kafka sees as distinct records, and a bounded FIFO per partition does that without a write per
event.
The ClickHouse totals do not depend on it: the sink deduplicates by event_id durably.
"""

from __future__ import annotations

import re
from array import array

_LOWER_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
_LOW64 = (1 << 64) - 1


class _Generation:
    """One generation of ids, packed: two flat arrays of 64-bit halves, open addressing, at most half full.

    Why not a ``set`` of the id strings: a generation lives for minutes while every other object of its batch dies
    at once, so each kept string pinned a part of a CPython small-object arena; after the rings filled, the
    worker's RSS kept creeping (arena fragmentation; with rings of a thousand ids it was flat). Two ``array``
    buffers are one allocation each, given back whole when the generation goes. Lowercase UUIDs — what the
    publisher writes — are stored as their 128 bits (exact); anything else a validated event can carry (uppercase
    hex, the nil UUID, which would read as an empty slot) goes to a small plain set beside them.
    """

    __slots__ = ("count", "_hi", "_lo", "_mask", "others")

    def __init__(self, capacity: int) -> None:
        size = 1 << (2 * capacity - 1).bit_length()
        self._hi = array("Q", bytes(8 * size))
        self._lo = array("Q", bytes(8 * size))
        self._mask = size - 1
        self.others: set[str] = set()
        self.count = 0

    def free_slot(self, start: int, lo: int, hi: int) -> int:
        """The empty slot where an id not held here goes (``start``: its hash)."""
        his, los, mask = self._hi, self._lo, self._mask
        i = start & mask
        while los[i] or his[i]:
            i = (i + 1) & mask
        return i

    def put(self, i: int, hi: int, lo: int) -> None:
        self._hi[i], self._lo[i] = hi, lo
        self.count += 1


def _packed(event_id: str) -> int | str:
    """The id's 128 bits when it is a canonical lowercase, non-nil UUID (exact: one such string per value), else
    the string itself."""
    if _LOWER_UUID(event_id) is not None:
        value = int(event_id.replace("-", ""), 16)
        if value:
            return value
    return event_id


class RecentIds:
    """Recently seen ``event_id`` sets, one ring per partition; dropped when the partition is revoked.

    A ring of ``generations`` packed id sets per partition (:class:`_Generation`): ids go into the newest one, and
    when it holds its share (``share = ceil(per_partition / (generations - 1))``) a new one starts and the oldest
    is dropped whole. So at least the last ``per_partition`` ids of a partition are always remembered and never
    more than ``generations × share - 1`` (about ``generations / (generations - 1)`` times ``per_partition``) —
    cheaper in memory and time than an ordered FIFO, which paid a linked-list node per id and an eviction per
    insert. Why more than two generations: with two, the set swung between one and two times ``per_partition`` ids
    and freed a whole ``per_partition`` of them at once; four keep the swing to a third of it, for a few more
    lookups per event.
    """

    def __init__(self, per_partition: int, generations: int = 4) -> None:
        if generations < 2:
            raise ValueError("generations must be >= 2")
        self.per_partition = per_partition
        self._share = -(-per_partition // (generations - 1))
        self._generations = generations
        self._rings: dict[int, list[_Generation]] = {}

    def first_time(self, partition: int, event_id: str) -> bool:
        """True the first time ``event_id`` is seen on ``partition`` (and remember it)."""
        ring = self._rings.get(partition)
        if ring is None:
            ring = self._rings[partition] = [_Generation(self._share)]
        key = _packed(event_id)
        if isinstance(key, int):  # the probe written out here: a method call per generation doubled its cost
            hi, lo, start = key >> 64, key & _LOW64, hash(key)
            for ids in reversed(ring):  # newest first: a duplicate is usually seconds behind its original
                his, los, mask = ids._hi, ids._lo, ids._mask
                i = start & mask
                while True:
                    slot_lo = los[i]
                    if slot_lo == lo and his[i] == hi:
                        return False
                    if not slot_lo and not his[i]:
                        break
                    i = (i + 1) & mask
            newest = ring[-1]
            newest.put(i if ids is newest else newest.free_slot(start, lo, hi), hi, lo)
        else:
            if any(key in ids.others for ids in ring):
                return False
            newest = ring[-1]
            newest.others.add(key)
            newest.count += 1
        if newest.count >= self._share:
            ring.append(_Generation(self._share))
            if len(ring) > self._generations:
                del ring[0]
        return True

    def forget(self, partition: int) -> None:
        self._rings.pop(partition, None)

    def held(self) -> dict[int, int]:
        """Ids held per partition (what ``costplane_worker_recent_ids`` reports: the set is full at
        ``per_partition`` and stays within about four thirds of it)."""
        return {partition: sum(ids.count for ids in ring) for partition, ring in self._rings.items()}
