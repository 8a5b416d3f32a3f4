"""The worker hands freed memory back to the system (glibc), and is a no-op where the allocator is another."""

from __future__ import annotations

import threading
from pathlib import Path

from costplane.config import WorkerSettings, load_settings
from costplane.streams.worker.allocator import _glibc, pin_mmap_threshold, trim, trim_every


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_freed_memory_in_the_middle_of_the_heap_goes_back_with_a_trim() -> None:
    if _glibc() is None:  # musl, macOS: nothing to tune, nothing done
        assert not trim() and not pin_mmap_threshold(128)
        return
    blocks = [bytes(1000) + bytes([i % 256]) for i in range(100_000)]  # ~100 MB of malloc'd (not pymalloc) blocks
    keep = bytes(1000) + b"top"  # allocated after them: the heap cannot shrink from its top when they are freed
    before = rss_kib()
    del blocks
    freed = rss_kib()
    assert trim()
    after = rss_kib()
    assert keep and before - after > 50_000  # at least 50 MB returned
    assert freed - after > 50_000  # by the trim, not by the free


def test_blocks_above_the_pinned_threshold_are_unmapped_when_freed() -> None:
    if _glibc() is None:
        return
    assert pin_mmap_threshold(128)
    kept = []
    for _ in range(3):  # with glibc's dynamic threshold, the first free would move big blocks into the heap
        big = [bytearray(256 * 1024) for _ in range(400)]  # 100 MB in 256 KiB blocks
        for b in big:
            b[0] = 1  # touch, so they are resident
        kept.append(bytes(1000))  # something small outlives them, as in a running worker
        held = rss_kib()
        del big
        assert held - rss_kib() > 60_000  # most of it (other threads of the test process allocate too)
    assert len(kept) == 3


def test_the_trim_thread_stops_when_told() -> None:
    stop = threading.Event()
    t = threading.Thread(target=trim_every, args=(0.01, stop))
    t.start()
    stop.set()
    t.join(2)
    assert not t.is_alive()


def test_defaults_pin_128_kib_and_trim_every_30_s() -> None:
    w = load_settings(WorkerSettings)
    assert (w.malloc_mmap_threshold_kib, w.malloc_trim_s) == (128, 30.0)
