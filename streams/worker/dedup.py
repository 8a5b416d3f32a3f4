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
was flat). A partition's packed ids are three sorted numpy arrays, replaced whole when they change; a poll is
looked up with one ``searchsorted`` per partition, in C.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from operator import attrgetter
from typing import NamedTuple, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

_U64 = npt.NDArray[np.uint64]
_Flags = npt.NDArray[np.bool_]
_UUID_LEN = 36
_DASHES = (8, 13, 18, 23)
_EMPTY: _U64 = np.empty(0, dtype=np.uint64)
_LOWER = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
_UPPER = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}").fullmatch
# The sort key mixes both halves, so ids whose last 64 bits never change (UUIDv1 and v6: clock sequence and node)
# still spread over distinct keys; multiplying by an odd constant is a bijection, so distinct ids rarely share one.
_MIX = np.uint64(0x9E3779B97F4A7C15)
_UPPER_MIX = np.uint64(0xD6E8FEB86659FD93)


def _halves(ids: Sequence[str], joined: str) -> tuple[_U64, _U64] | None:
    """The (first, last) 64 bits of each id when every one is an 8-4-4-4-12 hex UUID string; else None.

    Checked for the whole batch at once with string methods, in C: a regex per id costs more than the lookup.
    """
    n = len(ids)
    if len(joined) != _UUID_LEN * n or set(map(len, ids)) != {_UUID_LEN}:
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
    return halves[:, 0].copy(), halves[:, 1].copy()


class _Packed(NamedTuple):
    """Packed ids, in batch order: the sort key, the first 64 bits, and whether the spelling had capitals."""

    key: _U64
    first: _U64
    upper: _Flags

    @classmethod
    def of(cls, first: _U64, last: _U64, upper: _Flags) -> _Packed:
        return cls(last ^ (first * _MIX) ^ (upper.astype(np.uint64) * _UPPER_MIX), first, upper)


_NONE = _Packed(_EMPTY, _EMPTY, np.empty(0, dtype=bool))


def _pack(ids: list[str]) -> tuple[list[str], list[str], _Packed]:
    """The ids that pack (a UUID in lowercase or uppercase hex: its 128 bits and that flag name exactly one
    string), the others, and the packed form of the first ones, in order."""
    if not ids:
        return [], [], _NONE
    joined = "".join(ids)
    lower = joined.lower()
    if joined == lower or joined == joined.upper():  # one spelling for the whole batch: the common case
        halves = _halves(ids, joined)
        if halves is not None:
            upper = (
                np.zeros(len(ids), dtype=bool)
                if joined == lower
                else np.fromiter((e != e.lower() for e in ids), dtype=bool, count=len(ids))
            )  # digits only: lowercase
            return ids, [], _Packed.of(*halves, upper)
    packs: list[str] = []
    others: list[str] = []
    for e in ids:
        (packs if _LOWER(e) or _UPPER(e) else others).append(e)
    halves = _halves(packs, "".join(packs)) if packs else None
    if halves is None:
        return [], ids, _NONE
    upper = np.fromiter((e != e.lower() for e in packs), dtype=bool, count=len(packs))
    return packs, others, _Packed.of(*halves, upper)


class _PackedIds:
    """A ring's packed ids in one sorted run, three arrays side by side: the sort key (both halves mixed), the
    first 64 bits, and a tag (generation × 2 + the capitals flag). Key and first half give back the last half, so
    a match on all three is a match on the id.

    One run, not one per generation, because each array searched costs a few numpy calls per batch whatever its
    size; a generation that ends is compacted out of it in one pass. Each flush of the pending ids copies the
    three arrays once (``np.insert``): a few MiB at most, every few thousand ids.
    """

    __slots__ = ("key", "first", "tag")

    def __init__(self) -> None:
        self.key: _U64 = _EMPTY
        self.first: _U64 = _EMPTY
        self.tag: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.key)

    def add(self, packed: _Packed, generation: int) -> None:
        order = np.argsort(packed.key)
        key = packed.key[order]
        at = np.searchsorted(self.key, key)
        self.key = np.insert(self.key, at, key)
        self.first = np.insert(self.first, at, packed.first[order])
        self.tag = np.insert(self.tag, at, generation * 2 + packed.upper[order])

    def drop_before(self, generation: int) -> None:
        keep = (self.tag >> 1) >= generation
        if not keep.all():
            self.key, self.first, self.tag = self.key[keep], self.first[keep], self.tag[keep]

    def holds(self, packed: _Packed) -> _Flags:
        """Which of the packed ids are here: one ``searchsorted`` on the keys, then, for the keys found (true
        repeats, or two ids sharing a key: rare), the first half and the flag compared along the stretch of equal
        keys."""
        size = len(self.key)
        if not size:
            return np.zeros(len(packed.key), dtype=bool)
        at = np.searchsorted(self.key, packed.key)
        same_key: _Flags = np.take(self.key, at, mode="clip") == packed.key
        if not same_key.any():  # the common case: every id is new
            return same_key
        held = np.zeros(len(packed.key), dtype=bool)
        for j in np.flatnonzero(same_key):
            k, key, first, upper = int(at[j]), packed.key[j], packed.first[j], int(packed.upper[j])
            while k < size and self.key[k] == key:
                if self.first[k] == first and int(self.tag[k]) & 1 == upper:
                    held[j] = True
                    break
                k += 1
        return held


class _Ring:
    """The recent ids of one partition.

    ``pending`` holds the newest ids as the strings they came as, packed once they reach ``pending_limit`` (or the
    generation ends; one large batch may overshoot the limit before that): a set lookup per id is cheaper than a
    packed insert per batch, and a string that lives for seconds does not pin memory the way one living for
    minutes does. UUIDs in either case then go to ``packed``; any other string (mixed-case hex, or anything a
    caller passes that validation would have refused) to ``others``, exact but as strings. ``counts`` holds the ids
    of each live generation, oldest first.
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
        new = (
            [e for e in batch if e not in pending and e not in others]
            if others
            else [e for e in batch if e not in pending]
        )
        if new and len(self.packed):
            packs, _, packed = _pack(new)
            if packs:
                held = self.packed.holds(packed)
                if held.any():
                    gone = {packs[j] for j in np.flatnonzero(held)}
                    new = [e for e in new if e not in gone]
        return new

    def flush(self) -> None:
        """Pack the pending ids into the newest generation."""
        if self.pending:
            packs, odd, packed = _pack(list(self.pending))
            if packs:
                self.packed.add(packed, self.generation)
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
    UUIDs spelled in lowercase or uppercase hex are packed as their 128 bits and that spelling; any other string
    is kept as it is, so the answer is exact for every string either way.
    """

    def __init__(self, per_partition: int, generations: int = 4, pending_limit: int = 4096) -> None:
        if generations < 2:
            raise ValueError("generations must be >= 2")
        if per_partition < 1:
            raise ValueError("per_partition must be >= 1")
        self.per_partition = per_partition
        self._share = -(-per_partition // (generations - 1))
        self._generations = generations
        self._pending_limit = pending_limit
        self._rings: dict[int, _Ring] = {}

    def repeats(self, partition: int, event_ids: Sequence[str]) -> set[int]:
        """The positions in ``event_ids`` of ids already seen on ``partition`` (or earlier in the batch) — usually
        none — and remember the new ones. Meant to be called once per partition per poll: the packed lookup costs
        a few numpy calls whatever the batch size (a batch of mixed spellings adds a regex per id)."""
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
            ring.pending.update(new[done : done + take])
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
