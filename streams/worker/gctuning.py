"""Garbage-collector settings of a worker process: the collector's passes were a quarter of its CPU."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def tune_gc(threshold: int) -> None:
    """Collect garbage less often, and never re-walk what startup built.

    The worker allocates short-lived objects per event (decoded events, priced rows, window states) and keeps up
    to ``window_cache_keys`` states alive: with Python's default young-generation threshold (700 allocations) the
    collector ran every few events and its older-generation passes walked the whole cache, a quarter of the
    stream role's CPU. Reference counting frees almost all of it anyway; nothing it builds holds cycles per event.
    ``gc.freeze`` moves the imported modules, the Faust app and the price catalog to the permanent generation.
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)


@contextmanager
def collections_deferred() -> Iterator[None]:
    """No collection while a batch is worked on (a stream batch's windows, a sink batch's insert): its objects
    are all alive until the step returns, so a collection in between walks them only to find them in use.
    Reference counting frees them after; the deferred collection then runs on what is left."""
    if not gc.isenabled():  # already deferred by an outer caller: leave it to that one
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
