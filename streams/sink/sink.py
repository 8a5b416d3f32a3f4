"""The sink the worker drives: ``add`` events, ask ``should_flush``, ``flush`` → writes, then offsets commit.

The worker gives the offset-commit step as a callback, so the sink is testable without Kafka and the order
insert → commit offsets → mark seen is enforced here, in one place.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from costplane.logging import get_logger
from costplane.pricing.ledger import NOTHING, LedgerAmounts
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.errors import SinkUnavailable
from costplane.streams.sink.processor import Pending, dedup_batch

log = get_logger(__name__)

#: ``{partition: next offset to consume}`` (Kafka's committed-offset convention: last processed + 1).
CommitFn = Callable[[dict[int, int]], None]

_T = TypeVar("_T")


class Writer(Protocol):
    """What the sink needs from its writer (:class:`~costplane.streams.sink.writer.BatchWriter`)."""

    def recover(
        self,
        partitions: Sequence[int] | None = None,
        begun_within_s: int | None = None,
        begun_before_s: int | None = None,
    ) -> int: ...
    def filter_new(self, items: Sequence[Pending]) -> list[Pending]: ...
    def insert(self, items: Sequence[Pending], batch_id: str) -> list[tuple[Any, ...]]: ...
    def mark_seen(self, batch_id: str, rows: Sequence[tuple[Any, ...]]) -> None: ...


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """Flush when the buffer holds ``max_events`` or its oldest event waited ``max_age_s``."""

    max_events: int = 10_000
    max_age_s: float = 1.0

    def due(self, buffered: int, oldest_at: float | None, now: float) -> bool:
        if buffered == 0 or oldest_at is None:
            return False
        return buffered >= self.max_events or now - oldest_at >= self.max_age_s


@dataclass(frozen=True, slots=True)
class FlushResult:
    batch_id: str
    received: int
    inserted: int
    duplicates: int
    committed: dict[int, int]


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, OSError | SinkUnavailable):
        return True
    try:
        from clickhouse_connect.driver.exceptions import Error as ClickHouseError
    except ImportError:  # pragma: no cover - the worker extra is installed wherever the sink runs
        return False
    return isinstance(exc, ClickHouseError)


class ClickHouseSink:
    """Buffers priced events and writes them with exactly-once totals (see :mod:`.writer` for the protocol).

    On any failure the buffer is kept and the next ``flush`` first recovers the interrupted batch, so calling
    ``flush`` again (e.g. through :func:`retry_with_backoff`) neither loses nor double counts an event.

    ``shared=False`` (one sink per database, e.g. embedded chDB): the first flush, and any flush after a
    failure, recovers every open batch. ``shared=True`` (several sinks on one server, partitions spread by the
    consumer group): every flush first recovers the open batches of the partitions it is about to write
    (begun within ``recent_s``), and the first flush also those older than ``recent_s`` anywhere (their sink
    is certainly gone). A flush never takes more than a fraction of ``recent_s``.
    """

    def __init__(
        self,
        writer: Writer,
        commit: CommitFn,
        policy: FlushPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        fault: Callable[[str], None] | None = None,
        shared: bool = False,
        recent_s: int = 86_400,
    ) -> None:
        self.writer = writer
        self._commit = commit
        self.policy = policy or FlushPolicy()
        self._clock = clock
        self._fault = fault or (lambda point: None)
        self._buffer: list[Pending] = []
        self._oldest_at: float | None = None
        self._needs_recovery = True  # a previous process may have died mid-batch
        self.shared = shared
        self.recent_s = recent_s

    def __len__(self) -> int:
        return len(self._buffer)

    def add(self, priced: PricedEvent, partition: int, offset: int, ledger: LedgerAmounts = NOTHING) -> None:
        """Buffer one priced event with its source position and its per-event report amounts."""
        if not self._buffer:
            self._oldest_at = self._clock()
        self._buffer.append(Pending(priced, partition, offset, ledger))

    def discard_partitions(self, partitions: set[int]) -> int:
        """Drop buffered events of revoked partitions (their new owner re-reads them from the committed offset).

        For the worker's on-revoke hook when it does not flush first; returns how many events were dropped.
        Safe: nothing of those events was written or committed by this sink.
        """
        kept = [item for item in self._buffer if item.partition not in partitions]
        dropped = len(self._buffer) - len(kept)
        self._buffer = kept
        if not kept:
            self._oldest_at = None
        return dropped

    def should_flush(self) -> bool:
        return self.policy.due(len(self._buffer), self._oldest_at, self._clock())

    def _recover(self, partitions: list[int]) -> None:
        if not self.shared:
            if self._needs_recovery:
                self.writer.recover()
        else:
            if self._needs_recovery:
                self.writer.recover(begun_before_s=self.recent_s)
            self.writer.recover(partitions=partitions, begun_within_s=self.recent_s + 60)
        self._needs_recovery = False

    def flush(self) -> FlushResult | None:
        """Write the buffer, commit its offsets, mark it seen. Raises :class:`SinkUnavailable` to be retried."""
        if not self._buffer:
            return None
        batch_id = uuid.uuid4().hex
        offsets: dict[int, int] = {}
        for item in self._buffer:
            offsets[item.partition] = max(offsets.get(item.partition, -1), item.offset + 1)
        try:
            self._recover(sorted(offsets))
            unique = dedup_batch(self._buffer)
            new = self.writer.filter_new(unique)
            rows = self.writer.insert(new, batch_id)
            self._fault("inserted")
            self._commit(offsets)
            self._fault("committed")
            self.writer.mark_seen(batch_id, rows)
        except BaseException as exc:
            self._needs_recovery = True
            if _is_retryable(exc) and not isinstance(exc, SinkUnavailable):
                raise SinkUnavailable(f"ClickHouse flush failed, retry later: {exc}") from exc
            raise
        result = FlushResult(batch_id, len(self._buffer), len(rows), len(self._buffer) - len(rows), offsets)
        self._buffer.clear()
        self._oldest_at = None
        log.debug("sink_flushed", batch_id=batch_id, inserted=result.inserted, duplicates=result.duplicates)
        return result


def retry_with_backoff(
    fn: Callable[[], _T],
    *,
    sleep: Callable[[float], None] = time.sleep,
    initial_s: float = 0.5,
    max_s: float = 30.0,
    max_attempts: int | None = None,
    retry_on: tuple[type[BaseException], ...] = (SinkUnavailable,),
) -> _T:
    """Call ``fn`` until it succeeds, sleeping ``initial_s``, doubling up to ``max_s`` between attempts.

    For the worker: ``retry_with_backoff(sink.flush)`` pauses consumption while ClickHouse is down; a flush is
    safe to repeat. ``max_attempts`` (None = forever) re-raises the last error when exhausted.
    """
    delay = initial_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except retry_on as exc:
            if max_attempts is not None and attempt >= max_attempts:
                raise
            log.warning("sink_retry", attempt=attempt, delay_s=delay, error=str(exc))
            sleep(delay)
            delay = min(delay * 2, max_s)
