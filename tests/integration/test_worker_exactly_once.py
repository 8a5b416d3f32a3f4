"""Exact ClickHouse totals over at-least-once delivery: 100 000 events with 2 % duplicated event_ids, the worker
SIGKILLed at a random point and restarted; totals by tenant × feature × model equal the ground truth to the nano."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.pricing.catalog import default_catalog
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.reports.options import ReportOptions
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse, pytest.mark.chaos]

TENANTS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
FEATURES = ("chat", "search", "summarize")
MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-sonnet-20241022"), ("openai", "no-such-model-x"))
Truth = dict[tuple[str, str, str], tuple[int, int]]


def synthetic(n: int, dup_share: float, seed: int) -> tuple[list[list[UsageEvent]], Truth]:
    """Messages of 50 events of one tenant; ``dup_share`` of them re-sent later with the same event_id."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    unique: list[UsageEvent] = []
    for i in range(n):
        provider, model = rng.choice(MODELS)
        unique.append(
            UsageEvent(
                event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                occurred_at=now - rng.randrange(3_600_000),
                tenant=rng.choice(TENANTS),
                provider=provider,
                model=model,
                request_id=f"r{i}",
                attempt=1,
                status="ok",
                input_tokens=rng.randrange(1, 4000),
                cached_input_tokens=rng.randrange(0, 2000),
                output_tokens=rng.randrange(1, 1500),
                reasoning_tokens=rng.randrange(0, 300),
                feature=rng.choice(FEATURES),
                user_id=f"u{rng.randrange(500)}",
            )
        )
    stream = unique + [rng.choice(unique) for _ in range(int(n * dup_share))]
    rng.shuffle(stream)
    by_tenant: dict[str, list[UsageEvent]] = {}
    for ev in stream:
        by_tenant.setdefault(ev.tenant, []).append(ev)
    messages = [events[i : i + 50] for events in by_tenant.values() for i in range(0, len(events), 50)]
    rng.shuffle(messages)
    catalog = default_catalog()
    truth: dict[tuple[str, str, str], list[int]] = {}
    for ev in unique:
        cell = truth.setdefault((ev.tenant, ev.feature or "", ev.model), [0, 0])
        cell[0] += 1
        cell[1] += catalog.price_event(ev).cost_nanos
    return messages, {k: (v[0], v[1]) for k, v in truth.items()}


def produce(kafka: KafkaSettings, messages: list[list[UsageEvent]]) -> None:
    codec = UsageCodec.schemaless()
    producer = Producer({**kafka.confluent_config(), "linger.ms": 20, "compression.type": "lz4"})
    for events in messages:
        value, headers = codec.encode_batch(events[0].tenant, events)
        producer.produce(kafka.topic("usage"), key=events[0].tenant.encode(), value=value, headers=headers)
        producer.poll(0)
    assert producer.flush(30) == 0


def report(worker: WorkerProcess) -> Truth:
    status, answer = worker.get(
        "/api/report?" + ReportOptions.parse("spend", by=["tenant,feature,model"]).to_query_string(), 30
    )
    assert status == 200, answer
    rows = answer["rows"]
    return {(r["tenant"], r["feature"] or "", r["model"]): (int(r["attempts"]), int(r["cost_nanos"])) for r in rows}


def wait_totals(worker: WorkerProcess, expected_events: int, timeout_s: float) -> Truth:
    deadline = time.monotonic() + timeout_s
    seen: Truth = {}
    while time.monotonic() < deadline:
        seen = report(worker)
        if sum(v[0] for v in seen.values()) >= expected_events:
            time.sleep(2.0)  # anything still arriving would be a double count: read once more
            return report(worker)
        time.sleep(1.0)
    raise AssertionError(f"only {sum(v[0] for v in seen.values())} of {expected_events} events after {timeout_s} s")


def run_killed_once(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    clickhouse_settings: ClickHouseSettings,
    tmp_path: Path,
    kill_after: Callable[[WorkerProcess], None],
) -> tuple[Truth, Truth]:
    messages, truth = synthetic(100_000, 0.02, seed=42)
    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=6))
    produce(kafka_settings, messages)
    ch = clickhouse_settings.model_copy(update={"chdb_path": tmp_path / "chdb"})
    env = worker_env(kafka_settings, redis_settings, ch, sink_max_events=5000)
    first = WorkerProcess(env, tmp_path / "worker-1.log").start()
    try:
        first.wait_ready(90)
        kill_after(first)
    finally:
        first.kill()
    second = WorkerProcess(env, tmp_path / "worker-2.log").start()
    try:
        second.wait_ready(90)
        totals = wait_totals(second, sum(v[0] for v in truth.values()), 120)
    finally:
        second.stop()
    return truth, totals


def test_sigkill_mid_stream_keeps_clickhouse_totals_exact(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    clickhouse_settings: ClickHouseSettings,
    tmp_path: Path,
) -> None:
    delay = random.Random().uniform(0.5, 6.0)

    def kill_after(worker: WorkerProcess) -> None:
        time.sleep(delay)

    truth, totals = run_killed_once(kafka_settings, redis_settings, clickhouse_settings, tmp_path, kill_after)
    assert sum(v[0] for v in totals.values()) == 100_000
    assert totals == truth, f"killed after {delay:.2f} s"
    assert Counter(k[2] for k in totals)["no-such-model-x"] == len(TENANTS) * len(FEATURES)  # unpriced: kept


def test_five_sigkills_in_two_hundred_thousand_events_keep_totals_exact(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    clickhouse_settings: ClickHouseSettings,
    tmp_path: Path,
) -> None:
    """The worker SIGKILLed at five random points while it works through 200 000 events (2 % re-sent ids), each
    time restarted: ClickHouse totals equal the truth to the nano."""
    rng = random.Random()
    delays = [rng.uniform(0.5, 5.0) for _ in range(5)]
    messages, truth = synthetic(200_000, 0.02, seed=43)
    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=6))
    produce(kafka_settings, messages)
    ch = clickhouse_settings.model_copy(update={"chdb_path": tmp_path / "chdb"})
    env = worker_env(kafka_settings, redis_settings, ch, sink_max_events=5000)
    for n, delay in enumerate(delays):
        worker = WorkerProcess(env, tmp_path / f"worker-{n}.log").start()
        try:
            worker.wait_ready(90)
            time.sleep(delay)
        finally:
            worker.kill()
    last = WorkerProcess(env, tmp_path / "worker-last.log").start()
    try:
        last.wait_ready(90)
        totals = wait_totals(last, sum(v[0] for v in truth.values()), 240)
    finally:
        last.stop()
    assert sum(v[0] for v in totals.values()) == 200_000
    assert totals == truth, f"killed after {[round(d, 2) for d in delays]} s"
