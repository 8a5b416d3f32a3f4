"""UUIDv7Source: the layout RFC 9562 gives version 7, order within a source, uniqueness, and fork safety."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from costplane.publisher.ids import UUIDv7Source
from costplane.publisher.validation import EVENT_ID_PATTERN


class Clock:
    def __init__(self, ms: int) -> None:
        self.ns = ms * 1_000_000

    def __call__(self) -> int:
        return self.ns


def _millis(text: str) -> int:
    return uuid.UUID(text).int >> 80


def test_ids_carry_version_7_the_rfc_variant_and_the_current_millisecond() -> None:
    source = UUIDv7Source()
    before = time.time_ns() // 1_000_000
    ids = [source() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and EVENT_ID_PATTERN(text)  # lower-case canonical form, as validation wants
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= _millis(ids[0]) and _millis(ids[-1]) <= after + 1  # +1: a borrowed millisecond at most


def test_ids_of_one_source_increase_strictly_even_within_one_millisecond() -> None:
    clock = Clock(1_767_225_600_000)
    source = UUIDv7Source(clock)
    ids = [source() for _ in range(10_000)]  # more than the 4096 a millisecond's counter holds
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert _millis(ids[0]) == 1_767_225_600_000 and _millis(ids[4096]) == 1_767_225_600_001  # borrowed


def test_a_clock_stepped_back_does_not_break_the_order() -> None:
    clock = Clock(1_767_225_600_000)
    source = UUIDv7Source(clock)
    first = [source() for _ in range(5)]
    clock.ns -= 5_000 * 1_000_000  # NTP steps the clock back five seconds
    later = [source() for _ in range(5)]
    clock.ns += 10_000 * 1_000_000
    latest = source()
    assert first + later + [latest] == sorted(first + later + [latest])
    assert _millis(later[-1]) == 1_767_225_600_000 and _millis(latest) == 1_767_225_605_000


def test_ids_are_unique_across_sources_and_threads() -> None:
    sources = [UUIDv7Source(Clock(1_767_225_600_000)) for _ in range(4)]  # the same millisecond for all
    out: list[list[str]] = [[] for _ in range(8)]

    def make(i: int) -> None:
        source = sources[i % 4]
        out[i] = [source() for _ in range(5000)]

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [text for chunk in out for text in chunk]
    assert len(set(ids)) == len(ids) == 40_000
    for chunk in out:
        assert chunk == sorted(chunk)  # each thread's ids in the order it made them
    # 62 random bits per id: the random part itself is (practically) never repeated.
    assert len({text[19:] for text in ids}) == len(ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    source = UUIDv7Source(Clock(1_767_225_600_000))
    source()  # the parent has drawn a random pool the child would otherwise share
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        os.write(write, "\n".join(source() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    parent = [source() for _ in range(50)]
    assert len(child) == 50 and not set(child) & set(parent)
    assert {c[19:] for c in child}.isdisjoint({p[19:] for p in parent})
