"""The sink role: a plain consumer loop with manual commits, so the order insert → commit → mark seen holds.

Its own consumer group (``<group>.sink``): enforcement never waits for ClickHouse, and ClickHouse being down only
pauses this loop (retry with backoff, buffer kept), never the stream role. The loop decodes with the same codec;
it does not dead-letter (the stream role does), it only skips what does not decode.
"""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from costplane.config import ClickHouseSettings, KafkaSettings, WorkerSettings
from costplane.logging import get_logger
from costplane.publisher.codec import UsageCodec
from costplane.streams.worker.gctuning import collections_deferred
from costplane.streams.worker.metrics import WorkerMetrics
from costplane.streams.worker.pricing import price_events

log = get_logger(__name__)


class SinkLoop:
    """Consume usage, price, buffer in :class:`ClickHouseSink`, flush by size or age with offsets committed inside."""

    def __init__(self, kafka: KafkaSettings, clickhouse: ClickHouseSettings, worker: WorkerSettings,
                 metrics: WorkerMetrics, group: str) -> None:
        self.kafka, self.clickhouse, self.worker, self.metrics = kafka, clickhouse, worker, metrics
        self.group = group
        self.stop_event = threading.Event()
        self.ready = False
        self.opened: Any = None
        self._consumer: Any = None
        self.client_lock = threading.Lock()
        self.error: BaseException | None = None

    def open(self, api_url: str | None) -> None:
        """Own the directory (embedded), open ClickHouse, migrate: before any consumer exists."""
        from costplane.streams.sink.runtime import open_sink
        from costplane.streams.sink.sink import FlushPolicy

        self.opened = open_sink(self.clickhouse, self._commit,
                                policy=FlushPolicy(self.worker.sink_max_events, self.worker.sink_max_age_s),
                                api_url=api_url)

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()

    def _commit(self, offsets: dict[int, int]) -> None:
        from confluent_kafka import TopicPartition

        topic = self.kafka.topic("usage")
        self._consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)

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
        from confluent_kafka import Consumer

        from costplane.pricing.catalog import default_catalog
        from costplane.pricing.ledger import ledger_amounts
        from costplane.streams.sink.sink import FlushResult, retry_with_backoff

        codec = UsageCodec.with_registry(self.kafka.schema_registry_url) if self.kafka.schema_registry_url \
            else UsageCodec.schemaless()
        catalog = default_catalog()
        topic = self.kafka.topic("usage")
        consumer = Consumer({
            **self.kafka.confluent_config(), "group.id": self.group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": int(self.worker.session_timeout_s * 1000),
            "heartbeat.interval.ms": max(int(self.worker.session_timeout_s * 100), 300),
            "partition.assignment.strategy": "cooperative-sticky",
        })

        self._consumer = consumer
        sink = self.opened.sink

        def flush_once() -> FlushResult | None:
            with collections_deferred():  # one attempt at a time: never across the backoff's sleeps
                result: FlushResult | None = sink.flush()
            return result

        def flush() -> None:
            with self.client_lock:
                result = retry_with_backoff(flush_once, sleep=self._sleep, max_s=10.0)
            if result is not None:
                self.metrics.sink_batches.inc()
                self.metrics.sink_rows.inc(result.inserted)

        def on_revoke(_consumer: Any, _partitions: Any) -> None:
            # Offsets of what is buffered must be committed (and rows written) before another sink owns them.
            flush()

        consumer.subscribe([topic], on_revoke=on_revoke)
        self.ready = True
        next_lag_at = 0.0
        try:
            while not self.stop_event.is_set():
                msgs = consumer.consume(num_messages=1000, timeout=0.2)
                for msg in msgs:
                    if msg.error():
                        log.warning("sink_consume_error", error=str(msg.error()))
                        continue
                    headers = cast(list[tuple[str, bytes]], msg.headers() or [])
                    decoded = codec.decode(msg.value(), headers, now_ms=int(time.time() * 1000),
                                           max_clock_skew_ms=self.worker.max_clock_skew_ms)
                    for priced in price_events(catalog, decoded.events):
                        sink.add(priced, msg.partition(), msg.offset(), ledger_amounts(catalog, priced.event))
                    self.metrics.events.labels("sink").inc(len(decoded.events))
                if sink.should_flush():
                    flush()
                if time.monotonic() >= next_lag_at:
                    next_lag_at = time.monotonic() + 5.0
                    self.metrics.lag.labels("sink").set(self._lag(consumer))
            flush()
        finally:
            consumer.close()

    @staticmethod
    def _lag(consumer: Any) -> int:
        """Messages between this consumer's positions and the log ends (librdkafka's cached watermarks)."""
        lag = 0
        for tp in consumer.position(consumer.assignment()):
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                lag += max(high - tp.offset, 0)
        return lag

    def _sleep(self, seconds: float) -> None:
        self.metrics.sink_retries.inc()
        self.stop_event.wait(seconds)
