"""Nothing lost on a normal exit: the spool outlives the process, and interpreter exit flushes by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from costplane.config import KafkaSettings, PublisherSettings, load_settings
from costplane.publisher import UsageCodec, UsagePublisher
from costplane.publisher.jsonio import event_to_json_dict
from costplane.synthetic import generate

pytestmark = [pytest.mark.kafka]


def _consumed_ids(kafka: KafkaSettings, expected: int, timeout_s: float = 60.0) -> list[str]:
    topic = kafka.topic("usage")
    consumer = Consumer(
        {"bootstrap.servers": kafka.bootstrap_servers, "group.id": uuid.uuid4().hex, "enable.auto.commit": False}
    )
    ids: list[str] = []
    codec = UsageCodec.schemaless()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            metadata = consumer.list_topics(topic, timeout=5)
            if topic in metadata.topics and metadata.topics[topic].partitions:
                consumer.assign([TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions])
                break
            time.sleep(0.2)
        while len(set(ids)) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None:
                    ids += [e.event_id for e in codec.decode(msg.value(), msg.headers()).events]
    finally:
        consumer.close()
    return ids


def test_a_new_publisher_delivers_what_an_old_one_spooled(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    unreachable = load_settings(
        KafkaSettings, bootstrap_servers="127.0.0.1:9", topic_prefix=kafka_settings.topic_prefix
    )
    first = UsagePublisher(
        unreachable, load_settings(PublisherSettings, spool_dir=spool, delivery_timeout_ms=1000, close_timeout_s=1)
    )
    events = list(generate(800, seed=31))
    for e in events:
        assert first.emit(e)
    first.close()
    assert any(spool.glob("seg-*.spool")), "the unreachable broker should have left everything in the spool"

    second = UsagePublisher(kafka_settings, load_settings(PublisherSettings, spool_dir=spool))
    second.close()  # close drains the spool while the broker answers
    assert not any(p.stat().st_size for p in spool.glob("seg-*.spool"))
    ids = _consumed_ids(kafka_settings, len(events))
    assert set(ids) == {e.event_id for e in events}


def test_interpreter_exit_flushes_without_close(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    events = list(generate(300, seed=32))
    script = """
import json, sys
from costplane.publisher import UsagePublisher
from costplane.publisher.jsonio import event_from_json_dict
publisher = UsagePublisher()
for line in sys.stdin:
    publisher.emit(event_from_json_dict(json.loads(line)))
# no close(): the atexit hook must deliver what is buffered
"""
    env = {
        **os.environ,
        "COSTPLANE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "COSTPLANE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "COSTPLANE_PUBLISHER_SPOOL_DIR": str(tmp_path / "spool"),
        # Nothing leaves by linger or size: only the exit flush can send it.
        "COSTPLANE_PUBLISHER_LINGER_MS": "60000",
        "COSTPLANE_PUBLISHER_MAX_BATCH_EVENTS": "10000",
    }
    lines = "".join(json.dumps(event_to_json_dict(e)) + "\n" for e in events)
    done = subprocess.run(
        [sys.executable, "-c", script], input=lines, text=True, env=env, timeout=60, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert set(_consumed_ids(kafka_settings, len(events))) == {e.event_id for e in events}
