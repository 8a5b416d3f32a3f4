"""Dead letters exactly once per bad item across the invalid-ratio stop, a SIGKILL and restarts.

Before: the stop exits before the batch's offsets are committed, so a restart redelivered the messages and
dead-lettered their bad items again (7 194 dead letters for 5 000 bad items). The DLQ fence in Redis skips what was
flushed before; every record also carries a stable ``dlq-id``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from costplane.config import KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.testing import usage_event
from costplane.streams.app import EXIT_INVALID_RATIO
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.chaos]
BAD_BATCHES, PER_BATCH = 24, 50


def event(**changes: object) -> UsageEvent:
    return usage_event(**{"input_tokens": 10, "output_tokens": 5, **changes})


def dlq(env: dict[str, str]) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "costplane.cli", "dlq", "inspect", "--limit", "100000", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    records: list[dict[str, object]] = json.loads(done.stdout)
    return records


def test_each_bad_item_is_dead_lettered_once(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=1))
    env = worker_env(
        kafka_settings,
        redis_settings,
        None,
        usage_partitions=1,
        invalid_min_events=200,
        invalid_ratio_limit=0.5,
        invalid_window_s=600,
        batch_max_messages=4,
    )
    codec = UsageCodec.schemaless()
    producer = Producer(kafka_settings.confluent_config())
    topic = kafka_settings.topic("usage")
    for _ in range(2):
        producer.produce(
            topic,
            key=b"acme",
            value=codec.encode_batch("acme", [event() for _ in range(PER_BATCH)])[0],
            headers=codec.encode_batch("acme", [event()])[1],
        )
    for _ in range(BAD_BATCHES):  # a bad deploy upstream: every event invalid
        value, headers = codec.encode_batch("acme", [event(input_tokens=-1) for _ in range(PER_BATCH)])
        producer.produce(topic, key=b"acme", value=value, headers=headers)
    assert producer.flush(10) == 0
    bad_items = BAD_BATCHES * PER_BATCH

    first = WorkerProcess(env, tmp_path / "w1.log", role="stream").start()
    try:
        assert first.wait_exit(120) == EXIT_INVALID_RATIO  # the flood stops it, before its offsets are committed
    finally:
        first.stop()
    stopped_at = len(dlq(env))
    assert 0 < stopped_at < bad_items

    # Restarted with the same limit: it reads the same messages again, stops again, and writes nothing twice.
    second = WorkerProcess(env, tmp_path / "w2.log", role="stream").start()
    try:
        assert second.wait_exit(120) == EXIT_INVALID_RATIO
    finally:
        second.stop()
    after_restart = dlq(env)
    assert stopped_at <= len(after_restart) == len({str(r["id"]) for r in after_restart})  # nothing twice
    # The operator raises the limit; a SIGKILL mid-way, then a last run to the end.
    raised = {**env, "COSTPLANE_WORKER_INVALID_RATIO_LIMIT": "1"}
    third = WorkerProcess(raised, tmp_path / "w3.log", role="stream").start()
    try:
        third.wait_ready(90)
        third.kill()
    finally:
        third.stop()
    last = WorkerProcess(raised, tmp_path / "w4.log", role="stream").start()
    try:
        last.wait_ready(90)
        deadline = time.monotonic() + 90
        records = dlq(env)
        while len(records) < bad_items and time.monotonic() < deadline:
            time.sleep(1)
            records = dlq(env)
        time.sleep(3)  # anything written twice would arrive now
        records = dlq(env)
        assert last.proc is not None and last.proc.poll() is None
    finally:
        last.stop()
    ids = [str(r["id"]) for r in records]
    assert len(set(ids)) == bad_items  # every bad item, each with its own stable id
    # A SIGKILL between a batch's DLQ flush and its fence write re-sends at most that batch, under the same ids.
    assert len(records) - bad_items <= 4 * PER_BATCH
    assert {r["reason"] for r in records} == {"negative_tokens"}
