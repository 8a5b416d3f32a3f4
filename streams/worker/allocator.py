"""glibc allocator settings of a worker process: hand freed memory back to the system instead of keeping it.

The worker's own state is bounded (a window cache, recent-id sets, per-tenant detector totals), yet its RSS still
crept up once those were full (the 10-minute memory benchmark, docs/benchmarks.md). Part of that is memory that is
free in the process but not given back: glibc raises its mmap threshold every time a large block is freed (up to
32 MiB), so the big tables of sets and dicts that grow and are dropped (recent-id generations, batch buffers, Kafka
fetches) end up in the heap, where freed pages stay resident. Two settings stop that:

- a fixed mmap threshold (``M_MMAP_THRESHOLD``): blocks above it are always mapped on their own and unmapped when
  freed, and setting it turns the dynamic raise off;
- a periodic ``malloc_trim(0)``: free pages inside the heap are returned with ``MADV_DONTNEED``.

They do not reach CPython's own small-object arenas, which are only returned when wholly empty. Both are glibc's;
elsewhere (musl, macOS) they are skipped and the worker runs as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from functools import cache

from costplane.logging import get_logger

log = get_logger("costplane.worker")
M_MMAP_THRESHOLD = -3  # <malloc.h>


@cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # not glibc
    return libc


def pin_mmap_threshold(kib: int) -> bool:
    """Blocks of ``kib`` KiB and more are mapped on their own and unmapped when freed; 0 leaves glibc's default."""
    libc = _glibc()
    if libc is None or kib <= 0:
        return False
    done = bool(libc.mallopt(M_MMAP_THRESHOLD, kib * 1024))
    if not done:
        log.warning("mallopt refused the mmap threshold", kib=kib)
    return done


def trim() -> bool:
    """Return the heap's free pages to the system; True when glibc released any."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def trim_every(interval_s: float, stop: threading.Event | None = None) -> None:
    """:func:`trim` every ``interval_s`` until ``stop`` is set (the worker's daemon thread; ctypes releases the GIL)."""
    stop = stop or threading.Event()
    if _glibc() is None:
        return
    while not stop.wait(interval_s):
        trim()
