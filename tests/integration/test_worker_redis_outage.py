"""Redis stopped and restarted under a running stream worker and a guard: the stream pauses and retries (and
``/readyz`` says it waits for Redis), the guard answers by its failure policy without an exception, then every
window (the guard's counters) equals the ground truth exactly — nothing skipped, nothing counted twice."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer

from costplane.budgets import Budget
from costplane.config import DevStackSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.devstack.redis_server import RedisServer
from costplane.enforcers import BudgetGuard, RedisBudgetStore
from costplane.enforcers.guard import UNAVAILABLE
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, free_port, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.chaos]


def metric(worker: WorkerProcess, name: str) -> float:
    _, body = worker.get("/metrics", 10)
    for line in str(body).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_redis_restart_pauses_the_stream_and_keeps_windows_exact(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    server = RedisServer(load_settings(DevStackSettings, state_dir=tmp_path / "redis", redis_port=free_port()))
    server.start()
    try:
        assert _wait(server.healthy, 30)
        _run(kafka_settings, server, tmp_path)
    finally:
        server.stop()


def _run(kafka: KafkaSettings, server: RedisServer, tmp_path: Path) -> None:
    redis_settings = load_settings(RedisSettings, url=server.url, key_prefix="out")
    create_topics(kafka, load_settings(WorkerSettings, usage_partitions=2))
    budget = Budget(
        id="user-day", scope={"tenant": "*", "user": "*"}, period="day", unit="tokens", limit=10**12, version=1
    )
    producer = Producer({**kafka.confluent_config(), "linger.ms": 5})
    producer.produce(kafka.topic("budgets"), key=budget.id.encode(), value=budget.to_json().encode())
    assert producer.flush(10) == 0
    worker = WorkerProcess(
        worker_env(kafka, redis_settings, None, usage_partitions=2), tmp_path / "worker.log", role="stream"
    ).start()
    guard_store = RedisBudgetStore.from_url(server.url, prefix="guard")
    guard_store.publish_budgets("tenant0", [Budget.from_cli("g", scope="tenant=tenant0,user=*", limit_tokens=10**9)])
    guard = BudgetGuard(guard_store, decision_cache_s=0.0, budget_cache_s=0.0)  # every call asks Redis
    answers: list[str] = []
    app_exceptions: list[BaseException] = []
    stop_guard = threading.Event()

    def guarded_calls() -> None:  # an app calling the guard all along
        while not stop_guard.is_set():
            try:
                r = guard.reserve(
                    {"tenant": "tenant0", "user": "g"},
                    provider="openai",
                    model="gpt-4o-mini",
                    prompt_tokens=10,
                    max_tokens=10,
                )
                answers.append(r.answer.reason)
                r.release()
            except Exception as exc:  # noqa: BLE001 - counting is the point: the app must never see one
                app_exceptions.append(exc)
            time.sleep(0.01)

    caller = threading.Thread(target=guarded_calls, daemon=True)
    caller.start()
    try:
        worker.wait_ready(90)
        rng = random.Random(5)
        codec = UsageCodec.schemaless()
        truth: dict[tuple[str, str], int] = {}
        for i in range(60):
            if i == 20:
                assert server.stop()  # mid-stream: the worker must wait, not drop or double anything
            if i == 39:
                status, ready = worker.get("/readyz")
                assert status == 503 and str(ready["waiting"]["stream"]).startswith("Redis"), ready
                assert metric(worker, 'costplane_worker_waiting{part="stream"}') == 1
            if i == 40:
                server.start()
                assert _wait(server.healthy, 30)
            tenant = f"tenant{i % 3}"
            now_ms = int(time.time() * 1000)
            events = [
                UsageEvent(
                    event_id=str(uuid.uuid4()),
                    occurred_at=now_ms,
                    tenant=tenant,
                    provider="openai",
                    model="gpt-4o-mini",
                    request_id=str(uuid.uuid4()),
                    attempt=1,
                    status="ok",
                    input_tokens=rng.randrange(1, 500),
                    user_id=f"u{rng.randrange(20)}",
                )
                for _ in range(25)
            ]
            for ev in events:
                key = (ev.tenant, str(ev.user_id))
                truth[key] = truth.get(key, 0) + ev.total_tokens
            value, headers = codec.encode_batch(tenant, events)
            producer.produce(kafka.topic("usage"), key=tenant.encode(), value=value, headers=headers)
            producer.poll(0)
            time.sleep(0.15)
        assert producer.flush(10) == 0
        client = redis.Redis.from_url(server.url)

        def counters() -> dict[tuple[str, str], int]:
            out: dict[tuple[str, str], int] = {}
            for tenant, user in truth:
                counter = client.hgetall(f"out:{{{tenant}}}:spent:user-day:tenant={tenant},user={user}")
                out[(tenant, user)] = sum(int(v) for k, v in counter.items() if k.isdigit())  # buckets only
            return out

        deadline = time.monotonic() + 90
        while counters() != truth and time.monotonic() < deadline:
            time.sleep(0.5)
        got = counters()
        off = {k: (got[k], v) for k, v in truth.items() if got[k] != v}
        assert off == {}, f"windows off after the Redis restart (got, truth): {off}"
        assert metric(worker, "costplane_worker_window_retries_total") > 0  # the stream did pause and retry
        status, ready = worker.get("/readyz")
        assert (status, ready) == (200, {"ready": True, "waiting": {}})
        stop_guard.set()
        caller.join(10)
        assert app_exceptions == []
        assert UNAVAILABLE in answers and answers[-1] != UNAVAILABLE  # failed open during, enforced after
    finally:
        stop_guard.set()
        worker.stop()


def _wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False
