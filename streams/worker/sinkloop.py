"""The sink role: a plain consumer loop with manual commits, so the order insert → commit → mark seen holds.

Its own consumer group (``<group>.sink``): enforcement never waits for ClickHouse, and ClickHouse being down only
pauses this loop (retry with backoff, buffer kept), never the stream role. The loop decodes with the same codec and
takes the same validity decision as the stream role (:mod:`costplane.streams.pipeline.validity`: the clock-skew
rule against the record's own timestamp, never this loop's clock); it does not dead-letter (the stream role does),
it skips exactly what the stream role dead-letters and counts it in ``costplane_worker_sink_skipped_total``.

A second loop of the same class reads ``usage.backfill`` (imported history, :func:`backfill_loop`): its own
consumer group and its own sink on the same ClickHouse client, no clock-skew limit (history is old on purpose), and
its partitions numbered from :data:`BACKFILL_PARTITION_BASE` in the sink's ledger so they never mix with the live
topic's. The ``seen_event_ids`` check is shared, so an event is written once whichever topic brought it.

Outages of any length are ridden through, never fatal: a flush that fails because ClickHouse is down or because the
broker cannot take the offset commit (a restart: "Waiting for coordinator", a member that lost its generation) is
retried with backoff while the loop keeps polling with its partitions paused, so the consumer stays in its group
and a rebalance is served. ``waiting`` (and ``/readyz``, the ``costplane_worker_waiting`` gauge) says what for.
Retrying a flush is always safe: the writer's journal rolls an interrupted batch forward and filters what it wrote.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, cast

from costplane.config import ClickHouseSettings, KafkaSettings, WorkerSettings
from costplane.logging import get_logger
from costplane.publisher.codec import Reject, UsageCodec
from costplane.streams.pipeline.validity import decode_record, timestamp_ms
from costplane.streams.worker.gctuning import collections_deferred
from costplane.streams.worker.metrics import WorkerMetrics
from costplane.streams.worker.pricing import price_events

if TYPE_CHECKING:
    from costplane.streams.sink.sink import FlushResult

log = get_logger(__name__)

#: Added to a backfill partition number in the sink's ledger (``kafka_partition``, recovery by partition).
BACKFILL_PARTITION_BASE = 100_000


class SinkLoop:
    """Consume usage, price, buffer in :class:`ClickHouseSink`, flush by size or age with offsets committed inside."""

    _codec: UsageCodec  # built when the loop runs (a registry codec asks the registry)

    def __init__(
        self,
        kafka: KafkaSettings,
        clickhouse: ClickHouseSettings,
        worker: WorkerSettings,
        metrics: WorkerMetrics,
        group: str,
        *,
        source: str = "usage",
        partition_base: int = 0,
    ) -> None:
        self.kafka, self.clickhouse, self.worker, self.metrics = kafka, clickhouse, worker, metrics
        self.group = group
        self.source, self.partition_base = source, partition_base
        self.role = "sink" if source == "usage" else "backfill"
        self._own_sink: Any = None
        self.stop_event = threading.Event()
        self.ready = False
        self.opened: Any = None
        self._consumer: Any = None
        self.client_lock = threading.Lock()
        self.error: BaseException | None = None
        #: What the loop waits for while a flush keeps failing (None: nothing).
        self.waiting: str | None = None
        self._catalog: Any = None
        self._sink: Any = None
        self._backoff = Backoff(initial_s=0.5, max_s=10.0)

    def open(self, api_url: str | None) -> None:
        """Own the directory (embedded), open ClickHouse, migrate: before any consumer exists."""
        from costplane.streams.sink.runtime import open_sink
        from costplane.streams.sink.sink import FlushPolicy

        self.opened = open_sink(
            self.clickhouse,
            self._commit,
            policy=FlushPolicy(self.worker.sink_max_events, self.worker.sink_max_age_s),
            api_url=api_url,
        )

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()

    def _commit(self, offsets: dict[int, int]) -> None:
        """Commit the flushed batch's offsets; a broker that cannot take them now makes the flush retry later."""
        from confluent_kafka import KafkaException, TopicPartition

        from costplane.streams.sink.errors import SinkUnavailable

        topic = self.kafka.topic(self.source)
        try:
            self._consumer.commit(
                offsets=[TopicPartition(topic, p - self.partition_base, o) for p, o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            raise SinkUnavailable(f"Kafka offset commit failed, retry later: {exc}") from exc

    def report(self, query_string: str) -> Any:
        """``/api/report``: the same run_report as ``costplane report``, on this process's client."""
        with self.client_lock:
            return self.opened.report(query_string)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
            log.error("sink_loop_failed", error=str(exc))
            raise

    def _run(self) -> None:
        from costplane.pricing.catalog import default_catalog

        self._codec = (
            UsageCodec.with_registry(self.kafka.schema_registry_url)
            if self.kafka.schema_registry_url
            else UsageCodec.schemaless()
        )
        self._catalog = default_catalog()
        self._sink = self._own_sink if self._own_sink is not None else self.opened.sink
        self._backoff = Backoff(initial_s=0.5, max_s=10.0)
        consumer = self._consumer = self._new_consumer()
        consumer.subscribe([self.kafka.topic(self.source)], on_revoke=self._on_revoke, on_lost=self._on_revoke)
        self.ready = True
        try:
            self._poll_until_stopped(consumer)
            self._last_flush()
        finally:
            consumer.close()

    def _new_consumer(self) -> Any:
        from confluent_kafka import Consumer

        return Consumer(
            {
                **self.kafka.confluent_config(),
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(self.worker.session_timeout_s * 1000),
                "heartbeat.interval.ms": max(int(self.worker.session_timeout_s * 100), 300),
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )

    def _poll_until_stopped(self, consumer: Any) -> None:
        """Poll, buffer, flush by size or age; while a flush keeps failing, hold the partitions paused (what is
        buffered stays, the consumer keeps polling to stay in its group) and retry on the backoff's schedule."""
        next_lag_at = 0.0
        paused: list[Any] = []
        while not self.stop_event.is_set():
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                self._add(msg)
            if self.waiting is not None and not paused:
                paused = list(consumer.assignment())  # hold what is buffered; keep polling for the group
                consumer.pause(paused)
            self._flush_when_due()
            if self.waiting is None and paused:
                owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
                consumer.resume([tp for tp in paused if (tp.topic, tp.partition) in owned])
                paused = []
            if time.monotonic() >= next_lag_at:
                next_lag_at = time.monotonic() + 5.0
                self.metrics.lag.labels(self.role).set(self._lag(consumer))

    def _add(self, msg: Any) -> None:
        """Decode, price and buffer one message's valid events; what the stream role dead-letters (the same
        decision: :func:`decode_record` against the record's own timestamp) is skipped here, counted and logged."""
        from costplane.pricing.ledger import ledger_amounts

        if msg.error():
            log.warning("sink_consume_error", error=str(msg.error()))
            return
        headers = cast(list[tuple[str, bytes]], msg.headers() or [])
        skew = self.worker.max_clock_skew_ms if self.source == "usage" else None
        decoded = decode_record(self._codec, msg.value(), headers, timestamp_ms(msg.timestamp()[1]), skew)
        partition = (msg.partition() or 0) + self.partition_base
        for priced in price_events(self._catalog, decoded.events):
            self._sink.add(priced, partition, msg.offset(), ledger_amounts(self._catalog, priced.event))
        self.metrics.events.labels(self.role).inc(len(decoded.events))
        if decoded.rejects:
            self._skipped(decoded.rejects, msg)

    def _skipped(self, rejects: list[Reject], msg: Any) -> None:
        reasons: dict[str, int] = {}
        for rej in rejects:
            reasons[rej.reason] = reasons.get(rej.reason, 0) + 1
        for reason, n in reasons.items():
            self.metrics.sink_skipped.labels(self.role, reason).inc(n)
        log.info("sink_skipped", role=self.role, partition=msg.partition(), offset=msg.offset(), reasons=reasons)

    def _flush_when_due(self) -> None:
        if self.waiting is not None:
            if self._backoff.due(time.monotonic()):
                self._flush()  # an empty buffer (revoked meanwhile) counts as flushed
        elif self._sink.should_flush():
            self._flush()

    def _last_flush(self) -> None:
        """Stopping: a last flush, briefly retried (what stays unflushed is re-read later)."""
        for _ in range(3):
            if self._flush():
                break
            self.stop_event.wait(min(self._backoff.delay_s, 2.0))

    def _flush(self) -> bool:
        """One flush attempt: True when the buffer is written and committed (or empty)."""
        from costplane.streams.sink.errors import SinkUnavailable

        try:
            with collections_deferred(), self.client_lock:  # one attempt at a time: never across a backoff
                result: FlushResult | None = self._sink.flush()
        except SinkUnavailable as exc:
            self._set_waiting(str(exc))
            self._backoff.failed(time.monotonic())
            self.metrics.sink_retries.inc()
            log.warning("sink_retry", role=self.role, error=str(exc), retry_in_s=self._backoff.delay_s)
            return False
        if self.waiting is not None:
            log.info("sink_resumed", role=self.role, waited_for=self.waiting)
        self._set_waiting(None)
        self._backoff.reset()
        if result is not None:
            self.metrics.sink_batches.inc()
            self.metrics.sink_rows.inc(result.inserted)
        return True

    def _on_revoke(self, _consumer: Any, partitions: Any) -> None:
        """Offsets of what is buffered must be committed (and rows written) before another sink owns them. When
        that cannot happen now, the revoked partitions' events are dropped from the buffer: their new owner re-reads
        them from the committed offset, and the journal finishes whatever this sink began."""
        if not self._flush():
            dropped = self._sink.discard_partitions({int(tp.partition) + self.partition_base for tp in partitions})
            log.warning("sink_revoked_while_waiting", role=self.role, dropped=dropped)

    def _set_waiting(self, what: str | None) -> None:
        self.waiting = what
        self.metrics.waiting.labels(self.role).set(0 if what is None else 1)

    @staticmethod
    def _lag(consumer: Any) -> int:
        """Messages between this consumer's positions and the log ends (librdkafka's cached watermarks)."""
        lag = 0
        for tp in consumer.position(consumer.assignment()):
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                lag += max(high - tp.offset, 0)
        return lag


class Backoff:
    """When the next attempt is due after failures: ``initial_s``, doubling up to ``max_s``; reset on success."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self.delay_s = 0.0
        self._due_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self._due_at

    def failed(self, now: float) -> None:
        self.delay_s = self.initial_s if self.delay_s == 0 else min(self.delay_s * 2, self.max_s)
        self._due_at = now + self.delay_s

    def reset(self) -> None:
        self.delay_s, self._due_at = 0.0, 0.0


def backfill_loop(primary: SinkLoop) -> SinkLoop:
    """The loop for ``usage.backfill`` beside an opened ``primary`` sink loop: same client (and its lock), own sink,
    own consumer group ``<group>.backfill``."""
    from costplane.streams.sink.sink import ClickHouseSink, FlushPolicy
    from costplane.streams.sink.writer import BatchWriter

    loop = SinkLoop(
        primary.kafka,
        primary.clickhouse,
        primary.worker,
        primary.metrics,
        f"{primary.group}.backfill",
        source="usage.backfill",
        partition_base=BACKFILL_PARTITION_BASE,
    )
    loop.opened, loop.client_lock = primary.opened, primary.client_lock
    policy = FlushPolicy(primary.worker.sink_max_events, primary.worker.sink_max_age_s)
    loop._own_sink = ClickHouseSink(
        BatchWriter(primary.opened.client, primary.clickhouse.database),
        loop._commit,
        policy,
        shared=primary.clickhouse.url is not None,
    )
    return loop
