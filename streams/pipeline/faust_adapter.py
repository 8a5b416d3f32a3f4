"""The one place that knows Faust and aiokafka: batches in, producer out, partition signals, timers, tasks.

The pipeline's steps see plain :class:`Record` lists and an :class:`Outbox`; this module wires them to the Faust
app. Where it reaches into framework internals (the stream consumer's aiokafka fetcher, the aiokafka client's
metadata refresh) it says so, and ``tests/unit/test_faust_adapter.py`` fails when the installed Faust or aiokafka
no longer has what it relies on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from costplane.config import KafkaSettings, WorkerSettings
from costplane.logging import get_logger
from costplane.publisher.codec import Headers
from costplane.streams.pipeline.budgets import BudgetFollower, BudgetRecord
from costplane.streams.pipeline.fatal import FatalLatch, WorkerStopped
from costplane.streams.pipeline.records import Record
from costplane.streams.pipeline.reevaluate import Reevaluation
from costplane.streams.pipeline.stream import StreamPipeline
from costplane.streams.pipeline.validity import timestamp_ms

log = get_logger(__name__)


def record_of(message: Any) -> Record:
    """A Faust message as a :class:`Record` (Faust keeps the record timestamp in float seconds)."""
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        [(k, v) for k, v in (message.headers or [])],
        timestamp_ms(message.timestamp, 1000.0),
    )


class FaustOutbox:
    """The app's producer as the pipeline's :class:`~costplane.streams.pipeline.records.Outbox`."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None = None) -> None:
        await self.app.producer.send(topic, key, value, None, None, headers)

    async def flush(self) -> None:
        await self.app.producer.flush()


def set_fetch_max_wait(consumer: Any, ms: int) -> bool:
    """Set ``fetch_max_wait_ms`` on the aiokafka fetcher behind a Faust consumer; False when the objects are not
    where faust-streaming keeps them (another version), so the caller can say the setting is not applied.

    Why: aiokafka does not ask again for a partition whose fetched records the stream has not consumed yet, so
    when the stream is a little behind on a busy partition, the next fetch covers only idle partitions and the
    broker holds it for ``fetch_max_wait_ms``; new records of the busy partition wait behind it. Faust fixes the
    value at 1,500 ms (decisions at 5,000 events/s took 1.0–1.4 s after a backlog instead of about 150 ms) and
    offers no setting for it."""
    fetcher = getattr(getattr(getattr(consumer, "_thread", None), "_consumer", None), "_fetcher", None)
    if fetcher is None or not isinstance(getattr(fetcher, "_fetch_max_wait_ms", None), int):
        return False
    fetcher._fetch_max_wait_ms = ms
    return True


def compacted_consumer(bootstrap_servers: str) -> Any:
    """An aiokafka consumer (not started) for reading a compacted topic whole: no consumer group, no commits.

    Why no group: every worker needs every record (the latest value per key is the configuration in force), and a
    group would split the partitions between workers and remember offsets nobody wants to resume from.
    """
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
    )


async def assign_from_start(consumer: Any, topic: str) -> list[Any]:
    """Wait until ``topic`` exists (metadata refreshed every 0.5 s), assign all its partitions to a started
    aiokafka ``consumer`` and seek to their beginning; returns the partitions.

    Used for the budgets topic (:class:`AioKafkaBudgetSource`) and the detectors topic
    (:func:`costplane.streams.worker.detector_settings.follow_detector_settings`).
    """
    from aiokafka import TopicPartition

    parts = consumer.partitions_for_topic(topic) or set()
    while not parts:  # created by another process moments ago: aiokafka offers no public metadata refresh
        await asyncio.sleep(0.5)
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return tps


class AioKafkaBudgetSource:
    """The compacted budgets topic over a group-less aiokafka consumer, from its beginning."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.bootstrap_servers, self.topic = bootstrap_servers, topic
        self._consumer: Any = None
        self._tps: list[Any] = []
        self._end: dict[Any, int] = {}

    async def start(self) -> None:
        consumer = compacted_consumer(self.bootstrap_servers)
        self._consumer = consumer
        await consumer.start()
        self._tps = await assign_from_start(consumer, self.topic)
        self._end = await consumer.end_offsets(self._tps)

    async def records(self) -> list[BudgetRecord]:
        batch = await self._consumer.getmany(timeout_ms=200)
        return [(rec.key, rec.value) for records in batch.values() for rec in records]

    async def caught_up(self) -> bool:
        for tp in self._tps:
            if await self._consumer.position(tp) < self._end[tp]:
                return False
        return True

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


def wire_stream_role(
    app: faust.App,
    kafka: KafkaSettings,
    worker: WorkerSettings,
    pipeline: StreamPipeline,
    reevaluation: Reevaluation,
    budgets: BudgetFollower,
    outbox: FaustOutbox,
    fatal: FatalLatch,
) -> None:
    """The agent hands each batch to the pipeline; signals, the rollover timer and the budgets task call theirs."""
    usage_name = kafka.topic("usage")
    usage = app.topic(usage_name, value_serializer="raw", key_serializer="raw", partitions=worker.usage_partitions)

    @app.agent(usage)
    async def process(stream: Any) -> None:
        async for events in stream.take_events(worker.batch_max_messages, within=worker.batch_within_s):
            try:
                await pipeline.handle([record_of(event.message) for event in events])
            except WorkerStopped as exc:
                await outbox.flush()
                fatal.stop_process(exc)
                await asyncio.Event().wait()  # no further batch: the process stops (Faust cancels this agent)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        await reevaluation.revoked({tp.partition for tp in revoked})

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        if set_fetch_max_wait(app.consumer, worker.fetch_max_wait_ms):
            log.info("stream_fetch_wait", ms=worker.fetch_max_wait_ms)
        else:
            log.warning(
                "stream_fetch_wait_not_applied",
                ms=worker.fetch_max_wait_ms,
                reason="the Faust consumer's aiokafka fetcher was not found; Faust's 1500 ms stays",
            )
        await reevaluation.take_over({tp.partition for tp in app.consumer.assignment() if tp.topic == usage_name})

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def rollover() -> None:
        await reevaluation.rollover()

    @app.task  # type: ignore[untyped-decorator]
    async def follow_budgets() -> None:
        await budgets.follow(AioKafkaBudgetSource(kafka.bootstrap_servers, kafka.topic("budgets")))
