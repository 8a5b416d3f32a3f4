"""A budget crossing writes its Redis decision and a decisions-topic record; raising the budget lifts both."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer

from costplane.config import KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.testing import usage_event
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def make_event(tenant: str, user: str, tokens: int, now_ms: int | None = None) -> UsageEvent:
    return usage_event(
        occurred_at=now_ms or int(time.time() * 1000),
        tenant=tenant,
        input_tokens=tokens,
        output_tokens=0,
        user_id=user,
        feature="chat",
    )


def produce(kafka: KafkaSettings, events: list[UsageEvent]) -> None:
    codec = UsageCodec.schemaless()
    producer = Producer(kafka.confluent_config())
    value, headers = codec.encode_batch(events[0].tenant, events)
    producer.produce(kafka.topic("usage"), key=events[0].tenant.encode(), value=value, headers=headers)
    assert producer.flush(10) == 0


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costplane.cli", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class DecisionsReader:
    def __init__(self, kafka: KafkaSettings) -> None:
        self.consumer = Consumer(
            {**kafka.confluent_config(), "group.id": f"test-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
        )
        self.consumer.subscribe([kafka.topic("decisions")])
        self.records: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        for msg in self.consumer.consume(100, timeout=0.5):
            if not msg.error():
                self.records.append(json.loads(msg.value() or b"null"))
        return self.records


@pytest.fixture
def stream_worker(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, tmp_path: Path
) -> Iterator[tuple[WorkerProcess, dict[str, str]]]:
    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=2))
    env = worker_env(kafka_settings, redis_settings, None, usage_partitions=2)
    worker = WorkerProcess(env, tmp_path / "worker.log", role="stream").start()
    try:
        worker.wait_ready(90)
        yield worker, env
    finally:
        worker.stop()


def test_crossing_writes_decision_and_raising_lifts_it(
    stream_worker: tuple[WorkerProcess, dict[str, str]], kafka_settings: KafkaSettings, redis_settings: RedisSettings
) -> None:
    worker, env = stream_worker
    # Faust's fixed 1.5 s fetch wait delayed decisions behind idle partitions: the worker's own value is in force.
    wait_for(lambda: "stream_fetch_wait" in worker.log_path.read_text(), 30, "the fetch wait to be set")
    assert "stream_fetch_wait_not_applied" not in worker.log_path.read_text()
    done = cli(
        env,
        "budget",
        "set",
        "acme-user-day",
        "--scope",
        "tenant=acme,user=*",
        "--period",
        "day",
        "--limit-tokens",
        "1000",
        "--soft",
        "0.5",
        "--action",
        "block",
    )
    assert done.returncode == 0, done.stderr
    r = redis.Redis.from_url(redis_settings.url.get_secret_value())
    key = f"{redis_settings.key_prefix}:{{acme}}:decision:acme-user-day:tenant=acme,user=u1"
    reader = DecisionsReader(kafka_settings)

    produce(kafka_settings, [make_event("acme", "u1", 300), make_event("acme", "u1", 300)])  # 600: soft 0.5
    notes = wait_for(lambda: [x for x in reader.poll() if x["type"] == "threshold"], 30, "the soft notification")
    assert notes[0]["threshold"] == 0.5 and notes[0]["spent"] == 600
    assert r.get(key) is None

    produce(kafka_settings, [make_event("acme", "u1", 500), make_event("acme", "u2", 100)])  # u1: 1100 ≥ 1000
    raw = wait_for(lambda: r.get(key), 30, "the Redis decision")
    decision = json.loads(raw)
    assert decision["action"] == "block" and decision["spent"] == 1100 and decision["limit"] == 1000
    assert decision["member"] == "tenant=acme,user=u1"
    ttl_ms = r.pttl(key)
    assert 0 < ttl_ms <= decision["window_end_ms"] - int(time.time() * 1000) + 1000
    topic_decisions = wait_for(lambda: [x for x in reader.poll() if x["type"] == "decision"], 30, "decision record")
    assert topic_decisions[0]["budget_id"] == "acme-user-day" and topic_decisions[0]["member"].endswith("user=u1")
    assert len([x for x in reader.records if x["type"] == "threshold"]) == 1  # edge-triggered: once per window
    assert r.get(f"{redis_settings.key_prefix}:{{acme}}:decision:acme-user-day:tenant=acme,user=u2") is None
    spent = r.hgetall(f"{redis_settings.key_prefix}:{{acme}}:spent:acme-user-day:tenant=acme,user=u1")
    assert [int(v) for k, v in spent.items() if k.isdigit()] == [1100]  # reconciled to the exact total

    done = cli(
        env,
        "budget",
        "set",
        "acme-user-day",
        "--scope",
        "tenant=acme,user=*",
        "--period",
        "day",
        "--limit-tokens",
        "5000",
        "--soft",
        "0.5",
    )
    assert done.returncode == 0, done.stderr
    wait_for(lambda: r.get(key) is None, 30, "the decision to be lifted")
    lifts = wait_for(lambda: [x for x in reader.poll() if x["type"] == "lift"], 30, "the lift record")
    assert lifts[0]["member"] == "tenant=acme,user=u1" and lifts[0]["reason"] == "budget raised"
    listed = cli(env, "budget", "list", "--format", "json")
    assert [b["limit"] for b in json.loads(listed.stdout)] == [5000]
