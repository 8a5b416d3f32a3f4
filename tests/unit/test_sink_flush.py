"""Flush policy, the sink's step order and retry semantics, against a recording fake writer (no ClickHouse)."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.errors import SinkUnavailable
from costplane.streams.sink.processor import Pending
from costplane.streams.sink.sink import ClickHouseSink, FlushPolicy, retry_with_backoff


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeWriter:
    """Records the protocol steps; fails on demand like a ClickHouse outage."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.written: set[str] = set()
        self.fail_insert = 0

    def recover(
        self,
        partitions: Sequence[int] | None = None,
        begun_within_s: int | None = None,
        begun_before_s: int | None = None,
    ) -> int:
        self.log.append(
            "recover" if partitions is None and begun_before_s is None else f"recover:{partitions}:{begun_before_s}"
        )
        return 0

    def filter_new(self, items: Sequence[Pending]) -> list[Pending]:
        return [i for i in items if i.priced.event.event_id not in self.written]

    def insert(self, items: Sequence[Pending], batch_id: str) -> list[tuple[Any, ...]]:
        if self.fail_insert:
            self.fail_insert -= 1
            raise ConnectionRefusedError("clickhouse down")
        self.log.append(f"insert:{len(items)}")
        return [(i.priced.event.event_id,) for i in items]

    def mark_seen(self, batch_id: str, rows: Sequence[tuple[Any, ...]]) -> None:
        self.written.update(str(r[0]) for r in rows)
        self.log.append(f"seen:{len(rows)}")


def _priced(event_id: str) -> PricedEvent:
    return PricedEvent(UsageEvent(event_id, 0, "t", "p", "m", "r", 1, "ok"), 10, "v1")


def _sink(policy: FlushPolicy | None = None) -> tuple[ClickHouseSink, FakeWriter, list[str], FakeClock]:
    log: list[str] = []
    writer = FakeWriter(log)
    clock = FakeClock()
    sink = ClickHouseSink(writer, lambda offsets: log.append(f"commit:{sorted(offsets.items())}"), policy, clock=clock)
    return sink, writer, log, clock


def test_policy_flushes_by_size() -> None:
    sink, _, _, _ = _sink(FlushPolicy(max_events=3, max_age_s=60))
    assert not sink.should_flush()
    sink.add(_priced("a"), 0, 0)
    sink.add(_priced("b"), 0, 1)
    assert not sink.should_flush()
    sink.add(_priced("c"), 0, 2)
    assert sink.should_flush()


def test_policy_flushes_by_age_of_the_oldest_event() -> None:
    sink, _, _, clock = _sink(FlushPolicy(max_events=1000, max_age_s=2.0))
    sink.add(_priced("a"), 0, 0)
    clock.now += 1.9
    sink.add(_priced("b"), 0, 1)
    assert not sink.should_flush()
    clock.now += 0.1
    assert sink.should_flush()
    sink.flush()
    clock.now += 100
    assert not sink.should_flush()  # empty buffer never flushes


def test_order_is_insert_then_commit_then_mark_seen_and_offsets_are_next_to_read() -> None:
    sink, _, log, _ = _sink()
    for off, eid in enumerate(["a", "b", "a"]):
        sink.add(_priced(eid), 0, off)
    sink.add(_priced("c"), 3, 41)
    result = sink.flush()
    assert log == ["recover", "insert:3", "commit:[(0, 3), (3, 42)]", "seen:3"]
    assert result is not None and (result.received, result.inserted, result.duplicates) == (4, 3, 1)
    assert len(sink) == 0
    assert sink.flush() is None


def test_outage_raises_retryable_keeps_buffer_and_recovers_before_retrying() -> None:
    sink, writer, log, _ = _sink()
    sink.add(_priced("a"), 0, 0)
    sink.flush()
    sink.add(_priced("a"), 0, 1)  # redelivered duplicate
    sink.add(_priced("b"), 0, 2)
    writer.fail_insert = 1
    with pytest.raises(SinkUnavailable):
        sink.flush()
    assert len(sink) == 2
    log.clear()
    sink.flush()
    assert log == ["recover", "insert:1", "commit:[(0, 3)]", "seen:1"]


@pytest.mark.parametrize(
    "fault",
    [
        DatabaseError("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)"),
        OSError(errno.ENOSPC, "No space left on device"),
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
    ],
    ids=["chdb-not-enough-space", "enospc", "missing-path"],
)
def test_storage_faults_are_retried_not_fatal(fault: BaseException) -> None:
    """A full disk or a vanished path under embedded chDB is an outage to wait out: the worker exits on anything
    the sink raises other than SinkUnavailable, so these must arrive as SinkUnavailable with the buffer kept."""
    sink, writer, log, _ = _sink()
    sink.add(_priced("a"), 0, 0)

    def failing(items: Sequence[Pending], batch_id: str) -> list[tuple[Any, ...]]:
        raise fault

    writer.insert = failing  # type: ignore[method-assign]
    with pytest.raises(SinkUnavailable) as raised:
        sink.flush()
    assert raised.value.__cause__ is fault
    assert len(sink) == 1
    del writer.insert  # the disk has room again
    log.clear()
    sink.flush()
    assert log == ["recover", "insert:1", "commit:[(0, 1)]", "seen:1"]


def test_non_retryable_errors_propagate_unchanged() -> None:
    sink, _, _, _ = _sink()
    sink._commit = lambda offsets: (_ for _ in ()).throw(KeyError("rebalanced"))  # type: ignore[assignment]
    sink.add(_priced("a"), 0, 0)
    with pytest.raises(KeyError):
        sink.flush()
    assert len(sink) == 1


def test_retry_with_backoff_doubles_to_the_cap_and_returns_the_result() -> None:
    sleeps: list[float] = []
    failures = iter([True, True, True, True, False])

    def flaky() -> str:
        if next(failures):
            raise SinkUnavailable("down")
        return "ok"

    assert retry_with_backoff(flaky, sleep=sleeps.append, initial_s=1, max_s=3) == "ok"
    assert sleeps == [1, 2, 3, 3]


def test_retry_with_backoff_gives_up_after_max_attempts_and_ignores_other_errors() -> None:
    sleeps: list[float] = []

    def down() -> None:
        raise SinkUnavailable("down")

    with pytest.raises(SinkUnavailable):
        retry_with_backoff(down, sleep=sleeps.append, max_attempts=3)
    assert len(sleeps) == 2

    def bug() -> None:
        raise ValueError("bug")

    with pytest.raises(ValueError):
        retry_with_backoff(bug, sleep=sleeps.append)
    assert len(sleeps) == 2


def test_discard_partitions_drops_only_revoked_events() -> None:
    sink, _, log, _ = _sink()
    sink.add(_priced("a"), 0, 5)
    sink.add(_priced("b"), 1, 7)
    assert sink.discard_partitions({1}) == 1
    sink.flush()
    assert log == ["recover", "insert:1", "commit:[(0, 6)]", "seen:1"]
    sink.add(_priced("c"), 2, 0)
    assert sink.discard_partitions({2}) == 1 and len(sink) == 0 and not sink.should_flush()
