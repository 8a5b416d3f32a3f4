"""Broker down means spooled, not lost: 50 000 emits with the broker stopped for ~30 s in the middle.

Runs its own broker (a private dev-stack Kafka on free ports) so stopping it disturbs no other test.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from costplane.config import ClickHouseSettings, DevStackSettings, KafkaSettings, PublisherSettings, load_settings
from costplane.devstack.stack import DevStack
from costplane.publisher import UsageCodec, UsagePublisher
from costplane.synthetic import generate

pytestmark = [pytest.mark.kafka, pytest.mark.chaos, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[DevStack]:
    settings = load_settings(
        DevStackSettings,
        state_dir=tmp_path / "stack",
        kafka_port=_free_port(),
        kafka_controller_port=_free_port(),
        redis_port=_free_port(),
        kafka_heap="384m",
        kafka_partitions=3,
    )
    stack = DevStack(settings, load_settings(ClickHouseSettings, chdb_path=tmp_path / "ch"))
    stack.start_service("kafka")
    yield stack
    stack.stop_service("kafka")


def _consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 120.0) -> list[str]:
    codec = UsageCodec.schemaless()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions])
    ids: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=1.0):
                if msg.error() is None:
                    ids += [e.event_id for e in codec.decode(msg.value(), msg.headers()).events]
            if len(set(ids)) >= expected:
                break
    finally:
        consumer.close()
    return ids


def test_fifty_thousand_emits_across_a_thirty_second_outage_lose_nothing(
    private_kafka: DevStack, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    kafka = load_settings(KafkaSettings, bootstrap_servers=private_kafka.kafka.bootstrap, topic_prefix="outage")
    settings = load_settings(
        PublisherSettings,
        spool_dir=tmp_path / "spool",
        delivery_timeout_ms=3000,
        probe_interval_s=0.5,
        close_timeout_s=30,
    )
    events = list(generate(50_000, seed=11))
    publisher = UsagePublisher(kafka, settings)
    caller_exceptions = 0

    def emit_range(lo: int, hi: int, pace_s: float = 0.0) -> None:
        nonlocal caller_exceptions
        for i in range(lo, hi):
            try:
                assert publisher.emit(events[i])
            except Exception:  # noqa: BLE001 - counting is the point: the app must never see one
                caller_exceptions += 1
            if pace_s and i % 500 == 0:
                time.sleep(pace_s)

    emit_range(0, 20_000)
    time.sleep(1.0)
    outage_started = time.monotonic()
    private_kafka.stop_service("kafka")
    emit_range(20_000, 35_000, pace_s=0.7)  # keeps emitting through the outage (~21 s of pacing)
    time.sleep(max(0.0, 30.0 - (time.monotonic() - outage_started)))
    private_kafka.start_service("kafka")
    emit_range(35_000, 50_000)
    publisher.close()

    assert caller_exceptions == 0
    assert publisher.metrics.spooled._value.get() > 0, "the outage should have sent batches to the spool"
    ids = _consume_all(kafka.bootstrap_servers, kafka.topic("usage"), expected=len(events))
    missing = {e.event_id for e in events} - set(ids)
    m = publisher.metrics
    assert missing == set(), (
        f"{len(missing)} events not consumed; spool left {publisher.stats()['spool_bytes']} bytes, "
        f"spooled {m.spooled._value.get():.0f} / replayed {m.replayed._value.get():.0f} batches, "
        f"lost {[(s.labels, s.value) for metric in m.lost.collect() for s in metric.samples]}, "
        f"errors {[(s.labels, s.value) for metric in m.errors.collect() for s in metric.samples]}"
    )
    # Duplicates are possible (a batch delivered and then spooled by a late timeout); the worker dedups. Report
    # them, and fail only if they stop being the exception.
    duplicates = len(ids) - len(set(ids))
    record_property("duplicates", duplicates)
    record_property("spooled_batches", publisher.metrics.spooled._value.get())
    print(
        f"outage: {len(events)} events, {duplicates} duplicates, "
        f"{publisher.metrics.spooled._value.get():.0f} batches spooled, "
        f"{publisher.metrics.replayed._value.get():.0f} replayed"
    )
    assert duplicates <= len(events) // 10
