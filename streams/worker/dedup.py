"""A bounded set of recently seen event ids per partition: producer duplicates must not count twice in a window.

Why in memory and per partition: usage is keyed by tenant, so a duplicate (a publisher retry, a spool replay)
lands on the same partition as its original, usually seconds later. Redelivery after a crash is handled exactly
by the per-partition offset fence stored with the windows (see :mod:`.windowstore`); this set only has to catch
duplicates that Kafka sees as distinct records, and a bounded FIFO per partition does that without a write per
event.
The ClickHouse totals do not depend on it: the sink deduplicates by event_id durably.

Why the ids are packed into numpy arrays rather than kept as a ``set`` of strings: each kept id lived for minutes
while every other object of its batch died at once, so each one pinned part of a CPython small-object arena, and
the stream worker's resident memory kept creeping long after the rings were full (with rings of a thousand ids it
was flat). Sorted ``uint64`` arrays are one allocation each, given back whole; a batch is looked up with one
``searchsorted`` per array, in C.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

_U64 = npt.NDArray[np.uint64]
_UUID_LEN = 36
_DASHES = (8, 13, 18, 23)
_EMPTY: _U64 = np.empty(0, dtype=np.uint64)


def _packed(ids: Sequence[str]) -> tuple[_U64, _U64] | None:
    """The 128 bits of each id as (last 8 bytes, first 8 bytes), when every id is a lowercase 8-4-4-4-12 hex UUID —
    the spelling the publisher writes, and the only one whose bits name exactly one string. Else None.

    Checked for the whole batch at once, in C: a regex per id would cost more than the lookup it serves.
    """
    n = len(ids)
    joined = "".join(ids)
    if len(joined) != _UUID_LEN * n or set(map(len, ids)) != {_UUID_LEN} or joined != joined.lower():
        return None
    if joined.count("-") != 4 * n or any(joined[at::_UUID_LEN] != "-" * n for at in _DASHES):
        return None
    try:
        raw = bytes.fromhex(joined.replace("-", ""))
    except ValueError:  # a character that is not hex
        return None
    if len(raw) != 16 * n:  # fromhex skips whitespace
        return None
    halves = np.frombuffer(raw, dtype="<u8").reshape(n, 2)
    return halves[:, 1].copy(), halves[:, 0].copy()


def _split(ids: list[str]) -> tuple[list[str], list[str], _U64, _U64]:
    """The ids in the canonical spelling, the others, and the packed halves of the canonical ones, in order."""
    packed = _packed(ids) if ids else None
    if packed is not None:
        return ids, [], packed[0], packed[1]
    canonical = [e for e in ids if _packed((e,)) is not None]
    others = [e for e in ids if _packed((e,)) is None]
    packed = _packed(canonical) if canonical else None
    return canonical, others, *(packed if packed is not None else (_EMPTY, _EMPTY))


class _PackedIds:
    """A ring's packed ids in one sorted run: the last 64 bits (the sort key: random in UUIDv4 and UUIDv7), the
    first 64 bits and the generation of each, in three arrays side by side.

    One run, not one per generation, because each array searched costs a few numpy calls per batch whatever its
    size; a generation that ends is compacted out of it in one pass.
    """

    __slots__ = ("last", "first", "generation")

    def __init__(self) -> None:
        self.last: _U64 = _EMPTY
        self.first: _U64 = _EMPTY
        self.generation: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.last)

    def add(self, last: _U64, first: _U64, generation: int) -> None:
        order = np.argsort(last)
        last, first = last[order], first[order]
        at = np.searchsorted(self.last, last)
        self.last = np.insert(self.last, at, last)
        self.first = np.insert(self.first, at, first)
        self.generation = np.insert(self.generation, at, generation)

    def drop_before(self, generation: int) -> None:
        keep = self.generation >= generation
        if not keep.all():
            self.last, self.first, self.generation = self.last[keep], self.first[keep], self.generation[keep]

    def holds(self, last: _U64, first: _U64) -> npt.NDArray[np.bool_]:
        """Which of the queried ids are here. Exact: a match on the last 64 bits is confirmed on the first 64,
        along the whole stretch of entries that share the last ones."""
        size = len(self.last)
        if not size:
            return np.zeros(len(last), dtype=bool)
        at = np.searchsorted(self.last, last)
        same_last: npt.NDArray[np.bool_] = np.take(self.last, at, mode="clip") == last
        if not same_last.any():  # the common case: every id is new
            return same_last
        held = np.zeros(len(last), dtype=bool)
        for j in np.flatnonzero(same_last):
            k, key, other = int(at[j]), last[j], first[j]
            while k < size and self.last[k] == key:
                if self.first[k] == other:
                    held[j] = True
                    break
                k += 1
        return held


class _Ring:
    """The recent ids of one partition.

    ``pending`` holds the newest ids as the strings they came as, up to ``pending_limit``: a set lookup per id is
    cheaper than a packed insert per batch, and a string that lives for a second does not pin memory the way one
    living for minutes does. Canonical ids then go to ``packed``; any other spelling to ``others`` (exact, and
    empty in practice). ``counts`` holds the ids of each live generation, oldest first.
    """

    __slots__ = ("pending", "packed", "others", "counts", "generation")

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.packed = _PackedIds()
        self.others: dict[str, int] = {}
        self.counts = [0]
        self.generation = 0

    def unseen(self, event_ids: Sequence[str]) -> list[str]:
        """The distinct ids of ``event_ids`` not held here, in order of first occurrence."""
        batch = dict.fromkeys(event_ids)
        pending, others = self.pending, self.others
        new = [e for e in batch if e not in pending and e not in others] if others else \
            [e for e in batch if e not in pending]
        if new and len(self.packed):
            canonical, _, last, first_half = _split(new)
            if len(canonical):
                held = self.packed.holds(last, first_half)
                if held.any():
                    gone = {canonical[j] for j in np.flatnonzero(held)}
                    new = [e for e in new if e not in gone]
        return new

    def flush(self) -> None:
        """Pack the pending ids into the newest generation."""
        if self.pending:
            canonical, odd, last, first_half = _split(list(self.pending))
            if canonical:
                self.packed.add(last, first_half, self.generation)
            self.others.update(dict.fromkeys(odd, self.generation))
            self.pending = set()

    def next_generation(self, generations: int) -> None:
        self.flush()
        self.generation += 1
        self.counts.append(0)
        if len(self.counts) > generations:
            del self.counts[0]
            oldest = self.generation - generations + 1
            self.packed.drop_before(oldest)
            if self.others:
                self.others = {e: g for e, g in self.others.items() if g >= oldest}


class _Identified(Protocol):
    @property
    def event_id(self) -> str: ...


Event = TypeVar("Event", bound=_Identified)
_event_id = attrgetter("event_id")


class RecentIds:
    """Recently seen ``event_id`` sets, one ring per partition; dropped when the partition is revoked.

    A ring of ``generations`` generations per partition: ids go into the newest one, and when it holds its share
    (``share = ceil(per_partition / (generations - 1))``) a new one starts and the oldest is dropped whole. So at
    least the last ``per_partition`` ids of a partition are always remembered and never more than ``generations ×
    share - 1`` (about ``generations / (generations - 1)`` times ``per_partition``). Why more than two
    generations: with two, the set swung between one and two times ``per_partition`` ids and freed a whole
    ``per_partition`` of them at once; four keep the swing to a third of it.

    Ids are expected to be validated UUID strings (the worker only asks about events that passed validation).
    Lowercase ones are packed as their 128 bits; any other string is kept as it is, so the answer is exact for
    every string either way.
    """

    def __init__(self, per_partition: int, generations: int = 4, pending_limit: int = 4096) -> None:
        if generations < 2:
            raise ValueError("generations must be >= 2")
        self.per_partition = per_partition
        self._share = -(-per_partition // (generations - 1))
        self._generations = generations
        self._pending_limit = pending_limit
        self._rings: dict[int, _Ring] = {}

    def repeats(self, partition: int, event_ids: Sequence[str]) -> set[int]:
        """The positions in ``event_ids`` of ids already seen on ``partition`` (or earlier in the batch) — usually
        none — and remember the new ones. Meant to be called once per partition per poll: the packed lookup costs
        a few numpy calls whatever the batch size."""
        ring = self._rings.get(partition)
        if ring is None:
            ring = self._rings[partition] = _Ring()
        new = ring.unseen(event_ids)
        repeats: set[int] = set()
        if len(new) != len(event_ids):
            fresh = set(new)
            for i, event_id in enumerate(event_ids):
                if event_id in fresh:
                    fresh.discard(event_id)
                else:
                    repeats.add(i)
        done = 0
        while done < len(new):  # a generation may fill in the middle of the batch: the bounds hold id by id
            take = min(self._share - ring.counts[-1], len(new) - done)
            ring.pending.update(new[done:done + take])
            ring.counts[-1] += take
            done += take
            if ring.counts[-1] >= self._share:
                ring.next_generation(self._generations)
            elif len(ring.pending) >= self._pending_limit:
                ring.flush()
        return repeats

    def fresh(self, partition: int, event_ids: Sequence[str]) -> list[bool]:
        """For each id in order, True the first time it is seen on ``partition`` (and remember the new ones)."""
        repeats = self.repeats(partition, event_ids)
        return [i not in repeats for i in range(len(event_ids))]

    def keep_fresh(self, messages: Sequence[tuple[int, Sequence[Event]]]) -> list[Sequence[Event]]:
        """For each (partition, events) of a poll, the events seen there for the first time, in order; one
        lookup per partition for the whole poll, so its cost is spread over every message in it."""
        ids: dict[int, list[str]] = {}
        for partition, events in messages:
            ids.setdefault(partition, []).extend(map(_event_id, events))
        repeats = {partition: self.repeats(partition, batch) for partition, batch in ids.items()}
        if not any(repeats.values()):
            return [events for _, events in messages]
        kept: list[Sequence[Event]] = []
        seen = dict.fromkeys(repeats, 0)  # events of each partition already walked
        for partition, events in messages:
            start, skip = seen[partition], repeats[partition]
            seen[partition] = start + len(events)
            kept.append([ev for i, ev in enumerate(events, start) if i not in skip] if skip else events)
        return kept

    def holds(self, partition: int, event_id: str) -> bool:
        """Whether ``event_id`` is remembered on ``partition`` (remembering nothing)."""
        ring = self._rings.get(partition)
        return ring is not None and not ring.unseen((event_id,))

    def first_time(self, partition: int, event_id: str) -> bool:
        """True the first time ``event_id`` is seen on ``partition`` (and remember it)."""
        return not self.repeats(partition, (event_id,))

    def forget(self, partition: int) -> None:
        self._rings.pop(partition, None)

    def held(self) -> dict[int, int]:
        """Ids held per partition (what ``costplane_worker_recent_ids`` reports: the set is full at
        ``per_partition`` and stays within about four thirds of it)."""
        return {partition: sum(ring.counts) for partition, ring in self._rings.items()}
