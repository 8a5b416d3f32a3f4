"""UUIDv7 event ids, cheap enough to make one per event.

``uuid6.uuid7()`` costs several microseconds per id — a ``UUID`` object, a ``secrets.randbits`` call (one
``getrandom`` each) and a string conversion — which made generating the id the dearest part of ``record()``. It
is also not monotonic under load: it moves its timestamp one millisecond ahead for every id within the same
millisecond, so a sustained 100 000 ids/s runs the ids' time far ahead of the clock.

:class:`UUIDv7Source` writes the same layout (RFC 9562: 48-bit Unix milliseconds, version 7, 12 bits of
``rand_a``, the variant, 62 bits of ``rand_b``) straight as text:

* ``rand_a`` is a counter within the millisecond (RFC 9562 §6.2, method 1), so ids of one source sort in the
  order they were made; past 4096 ids in one millisecond the source borrows the next millisecond, and a clock
  stepped back keeps counting on the last one, so the order holds across both;
* ``rand_b`` comes from ``os.urandom`` drawn a few kilobytes at a time, already as hex: 62 random bits keep ids
  of different processes (and of two sources in one) apart;
* the random pool is dropped in a forked child, which would otherwise repeat its parent's ids.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable

#: Hex digits of the random pool drawn at a time: 256 ids per ``os.urandom`` call.
_POOL_BYTES = 2048
#: The first hex digit of ``rand_b`` carries the variant (binary 10xx): any random digit maps to one of 8, 9, a, b.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}
_SEQ_MAX = 0xFFF


class UUIDv7Source:
    """Makes UUIDv7 strings; thread-safe, monotonic per source, one per publisher."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._ms = -1
        self._seq = 0
        self._prefix = ""
        self._pool = ""
        self._next = 0
        os.register_at_fork(after_in_child=_forget_pool(weakref.ref(self)))

    def __call__(self) -> str:
        """A new id, e.g. ``019b76da-a800-7000-8f3c-0f1d2e3c4b5a``."""
        lock = self._lock
        lock.acquire()
        try:
            ms = self._clock_ns() // 1_000_000
            if ms > self._ms:
                self._ms, seq = ms, 0
                self._prefix = _prefix(ms)
            else:  # same millisecond, or the clock stepped back: keep counting on the last one
                seq = self._seq + 1
                if seq > _SEQ_MAX:
                    self._ms, seq = self._ms + 1, 0  # borrow the next millisecond
                    self._prefix = _prefix(self._ms)
            self._seq = seq
            prefix, at = self._prefix, self._next
            pool = self._pool
            if at + 16 > len(pool):
                pool = self._pool = os.urandom(_POOL_BYTES).hex()
                at = 0
            self._next = at + 16
        finally:
            lock.release()
        return f"{prefix}{seq:03x}-{_VARIANT[pool[at]]}{pool[at + 1 : at + 4]}-{pool[at + 4 : at + 16]}"

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._next = "", 0


def _prefix(ms: int) -> str:
    """``tttttttt-tttt-7``: the millisecond timestamp and the version digit."""
    t = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
    return f"{t[:8]}-{t[8:]}-7"


def _forget_pool(ref: weakref.ref[UUIDv7Source]) -> Callable[[], None]:
    def after_in_child() -> None:
        source = ref()
        if source is not None:
            source._after_fork()

    return after_in_child
