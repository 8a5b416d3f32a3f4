"""Reservation ids: unique across threads, processes and forks, and cheap enough for every guarded call.

A reservation's id names its record in each budget's counter hash, so two live reservations must never share one.
An id is a random per-process prefix (64 bits from the OS) plus a counter. Drawing 80 fresh random bits per call
costs a ``getrandom`` system call each time; the counter costs nothing, and ``itertools.count`` hands out each value
once even between threads. A forked child would inherit the parent's prefix and counter, so the prefix is drawn
again in the child.
"""

from __future__ import annotations

import itertools
import os
import weakref


class ReservationIds:
    """``next()`` gives ``<16 hex digits of process prefix><counter in hex>``."""

    def __init__(self) -> None:
        self._draw()
        ref = weakref.ref(self)

        def redraw() -> None:  # a weak reference: a guard that is gone is not kept alive by the fork hook
            ids = ref()
            if ids is not None:
                ids._draw()

        os.register_at_fork(after_in_child=redraw)

    def _draw(self) -> None:
        self.prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self._counter):x}"
