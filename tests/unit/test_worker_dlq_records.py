"""Dead-letter records and the invalid-ratio stop."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from costplane.publisher.codec import Reject
from costplane.streams.dlq import (
    H_REASON,
    InvalidRatioExceeded,
    InvalidRatioGuard,
    dead_letters,
    describe,
)
from costplane.streams.worker.dedup import RecentIds


def test_undecodable_message_keeps_its_bytes_and_headers() -> None:
    [dl] = dead_letters(
        [Reject("undecodable", "bad bytes")],
        topic="p.usage",
        partition=3,
        offset=42,
        key=b"acme",
        value=b"\x00\x01",
        headers=[("costplane-schema", b"UsageBatch")],
    )
    headers = dict(dl.headers)
    assert dl.value == b"\x00\x01" and headers["costplane-schema"] == b"UsageBatch"
    assert headers["dlq-topic"] == b"p.usage" and headers["dlq-partition"] == b"3" and headers["dlq-offset"] == b"42"
    assert headers["dlq-error-class"] == b"decode" and headers[H_REASON] == b"undecodable"
    info = describe(dl.key, dl.value, dl.headers, 0, 7)
    assert info["reason"] == "undecodable" and info["offset"] == 42 and info["payload"]["bytes"] == 2


def test_invalid_event_is_dead_lettered_alone_as_json() -> None:
    rej = Reject("negative_tokens", "input_tokens is -1", {"tenant": "acme", "input_tokens": -1}, 2)
    [dl] = dead_letters([rej], topic="t", partition=0, offset=1, key=b"acme", value=b"whole batch", headers=[])
    info = describe(dl.key, dl.value, dl.headers, 0, 0)
    assert info["payload"] == {"tenant": "acme", "input_tokens": -1}
    assert info["error_class"] == "validation" and info["message"] == "input_tokens is -1"


def test_ratio_guard_needs_min_events_then_stops_with_the_setting_named() -> None:
    guard = InvalidRatioGuard(limit=0.5, window_s=60, min_events=100)
    guard.observe(0, 50, now_s=1000)  # all invalid but too few to judge
    guard.observe(100, 10, now_s=1001)
    with pytest.raises(InvalidRatioExceeded, match="COSTPLANE_WORKER_INVALID_RATIO_LIMIT=0.5"):
        guard.observe(0, 200, now_s=1002)


def test_ratio_guard_forgets_old_seconds() -> None:
    guard = InvalidRatioGuard(limit=0.5, window_s=10, min_events=10)
    guard.observe(0, 9, now_s=100)
    guard.observe(100, 0, now_s=200)
    guard.observe(0, 20, now_s=201)  # the old invalid burst left the window: 20 / 120
    assert guard.ratio == pytest.approx(20 / 120)


def test_recent_ids_remember_at_least_the_last_n_and_at_most_2n_with_two_generations() -> None:
    recent = RecentIds(per_partition=3, generations=2)
    assert recent.first_time(0, "a") and not recent.first_time(0, "a")
    assert recent.first_time(1, "a")  # another partition
    for event_id in ("b", "c", "d", "e"):
        assert recent.first_time(0, event_id)
    assert not any(recent.first_time(0, x) for x in ("c", "d", "e"))  # the last 3 are always remembered
    for event_id in ("f", "g", "h"):
        assert recent.first_time(0, event_id)
    assert recent.first_time(0, "a")  # more than 2 × 3 ids ago: forgotten, memory stays bounded
    recent.forget(0)
    assert recent.first_time(0, "h") and not recent.first_time(1, "a")


def _uuid(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


@pytest.mark.parametrize("spell", [str, _uuid], ids=["plain-strings", "uuids"])
@pytest.mark.parametrize("generations", [2, 3, 4, 7])
def test_recent_ids_keep_between_n_and_n_times_g_over_g_minus_1(generations: int, spell: Callable[[int], str]) -> None:
    per = 12
    recent = RecentIds(per_partition=per, generations=generations)
    most = 0
    for i in range(200):
        assert recent.first_time(0, spell(i))
        held = recent.held()[0]
        most = max(most, held)
        assert min(i + 1, per) <= held <= -(-per // (generations - 1)) * generations - 1
        # Every one of the last ``per`` ids is still a duplicate; the oldest beyond the bound are not.
        assert all(recent.holds(0, spell(j)) for j in range(max(0, i + 1 - per), i + 1))
        assert sum(recent.holds(0, spell(j)) for j in range(max(0, i - 2 * per), i + 1)) == held
    assert most == -(-per // (generations - 1)) * generations - 1  # the bound is reached, and tight
    assert recent.first_time(0, spell(0))  # 200 ids ago: forgotten


@pytest.mark.parametrize("batch", [1, 7, 100])
def test_recent_ids_in_batches_never_invent_a_duplicate_and_keep_the_last_n(batch: int) -> None:
    per, rng = 300, random.Random(batch)
    recent = RecentIds(per_partition=per)
    stream = [
        rng.choice([_uuid(rng.randrange(2000)), f"odd-{rng.randrange(2000)}", _uuid(rng.randrange(2000)).upper()])
        for _ in range(5000)
    ]
    remembered: list[str] = []  # the ids answered "first time", in order
    for start in range(0, len(stream), batch):
        chunk = stream[start : start + batch]
        last_n, ever = set(remembered[-per:]), set(remembered)
        for event_id, fresh in zip(chunk, recent.fresh(0, chunk), strict=True):
            if fresh:
                assert event_id not in last_n  # the last ``per`` are always caught
                remembered.append(event_id)
                last_n.add(event_id)
            else:
                assert event_id in ever  # seen before, or earlier in this batch
            ever.add(event_id)
        assert min(per, len(remembered)) <= recent.held()[0] <= 4 * -(-per // 3) - 1
    assert len(set(stream)) < len(remembered) < len(stream)  # ids were forgotten, and duplicates caught


def test_recent_ids_tell_apart_ids_sharing_half_their_bits_and_spellings_of_one_uuid() -> None:
    recent = RecentIds(per_partition=1000)
    twins = [str(uuid.UUID(int=(high << 64) | 0xABC)) for high in (1, 2, 3)]
    assert recent.fresh(0, twins[:2]) == [True, True]
    assert recent.fresh(0, [twins[2], twins[1], twins[0], twins[2]]) == [True, False, False, False]
    lower = _uuid(0xFACE)
    assert recent.fresh(0, [lower, lower.upper(), lower.upper(), lower]) == [True, True, False, False]
    assert recent.held()[0] == 5


def test_recent_ids_refuse_a_single_generation() -> None:
    with pytest.raises(ValueError, match="generations"):
        RecentIds(per_partition=3, generations=1)


def test_recent_ids_held_are_scraped_per_partition() -> None:
    from prometheus_client import generate_latest

    from costplane.streams.worker.metrics import WorkerMetrics

    recent = RecentIds(per_partition=1000)
    metrics = WorkerMetrics()
    metrics.watch_recent_ids(recent.held)
    for i in range(7):
        recent.first_time(2, f"a{i}")
    recent.first_time(0, "b")
    recent.first_time(0, "b")  # a duplicate holds nothing more
    text = generate_latest(metrics.registry).decode()
    assert 'costplane_worker_recent_ids{partition="0"} 1.0' in text
    assert 'costplane_worker_recent_ids{partition="2"} 7.0' in text
    recent.forget(2)
    assert 'partition="2"' not in generate_latest(metrics.registry).decode()
    with pytest.raises(ValueError, match="Duplicated"):  # one series per name, as Prometheus requires
        metrics.watch_recent_ids(recent.held)


def test_recent_ids_keep_the_fresh_events_of_a_poll_per_message_in_order() -> None:
    @dataclass
    class Ev:
        event_id: str

    recent = RecentIds(per_partition=1000)
    a, b, c, d = (Ev(_uuid(0xABCDEF + i)) for i in range(4))  # with letters: an upper-case spelling differs
    assert recent.first_time(1, c.event_id)
    poll = [(0, [a, b]), (1, [c, d]), (0, [b, Ev(a.event_id.upper()), a]), (1, [])]
    kept = recent.keep_fresh(poll)
    assert [[ev.event_id for ev in evs] for evs in kept] == [
        [a.event_id, b.event_id],
        [d.event_id],
        [a.event_id.upper()],
        [],
    ]
    assert recent.keep_fresh([(0, [a]), (2, [a])]) == [[], [a]]  # nothing new on 0, and 2 is another ring
    fresh_poll = [(0, [Ev(_uuid(10))]), (1, [Ev(_uuid(11))])]
    assert recent.keep_fresh(fresh_poll) == [evs for _, evs in fresh_poll]
    assert recent.held() == {0: 4, 1: 3, 2: 1}


def test_recent_ids_pack_both_hex_cases_and_spread_ids_that_share_their_last_half() -> None:
    recent = RecentIds(per_partition=30_000, pending_limit=64)
    v1 = [str(uuid.uuid1(node=0x1234, clock_seq=7)) for _ in range(2000)]
    assert len({u[19:] for u in v1}) == 1  # UUIDv1: the last 64 bits are the same for every id of a host
    assert recent.fresh(0, v1) == [True] * 2000
    ring = recent._rings[0]
    ring.flush()
    assert len(np.unique(ring.packed.key)) == len(ring.packed) == 2000  # distinct keys: one search per lookup
    assert recent.fresh(0, v1[::-1]) == [False] * 2000
    upper = [str(uuid.uuid4()).upper() for _ in range(100)]
    digits = "12345678-1234-1234-1234-123456789012"  # no letters: the same string in either case
    assert recent.fresh(0, [*upper, digits]) == [True] * 101
    assert recent.fresh(0, [digits, *(u.lower() for u in upper)]) == [False] + [True] * 100
    mixed = upper[0][:10].lower() + upper[0][10:]
    assert recent.fresh(0, [mixed, mixed.upper()]) == [True, False]
    ring.flush()
    assert ring.others == {mixed: ring.generation}  # only the mixed spelling stays a string
    assert len(ring.packed) == 2000 + 100 + 1 + 100


def test_recent_ids_refuse_an_empty_bound() -> None:
    with pytest.raises(ValueError, match="per_partition"):
        RecentIds(per_partition=0)
