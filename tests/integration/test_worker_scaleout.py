"""Two stream workers share 6 partitions (plus a separate sink process); one is SIGKILLed mid-stream. The survivor
takes its partitions over from the windows in Redis (fenced by offsets): budget windows (the guard's reconciled
counters), decisions and the ClickHouse totals are still exact."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer

from costplane.budgets import Budget
from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.pricing.catalog import default_catalog
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.reports.options import ReportOptions
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse, pytest.mark.chaos]

TENANTS = tuple(f"tenant{i}" for i in range(12))


def make_events(n: int, seed: int) -> list[UsageEvent]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    return [
        UsageEvent(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            occurred_at=now - rng.randrange(30_000),
            tenant=rng.choice(TENANTS),
            provider="openai",
            model="gpt-4o-mini",
            request_id=f"r{i}",
            attempt=1,
            status="ok",
            input_tokens=rng.randrange(1, 3000),
            output_tokens=rng.randrange(1, 900),
            feature=rng.choice(("chat", "search")),
            user_id=f"u{rng.randrange(50)}",
        )
        for i in range(n)
    ]


def test_two_workers_one_killed_keep_windows_decisions_and_totals_exact(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    clickhouse_settings: ClickHouseSettings,
    tmp_path: Path,
) -> None:
    events = make_events(60_000, seed=11)
    tokens: dict[str, int] = {}
    for ev in events:
        tokens[ev.tenant] = tokens.get(ev.tenant, 0) + ev.total_tokens
    limit = sorted(tokens.values())[len(tokens) // 2]  # about half the tenants end over the limit
    catalog = default_catalog()
    cost = {t: 0 for t in TENANTS}
    for ev in events:
        cost[ev.tenant] += catalog.price_event(ev).cost_nanos

    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=6))
    budget = Budget(id="tenant-day", scope={"tenant": "*"}, period="day", unit="tokens", limit=limit, version=1)
    producer = Producer({**kafka_settings.confluent_config(), "linger.ms": 10})
    producer.produce(kafka_settings.topic("budgets"), key=budget.id.encode(), value=budget.to_json().encode())
    assert producer.flush(10) == 0

    ch = clickhouse_settings.model_copy(update={"chdb_path": tmp_path / "chdb"})
    env = worker_env(kafka_settings, redis_settings, ch, usage_partitions=6)
    a = WorkerProcess(env, tmp_path / "a.log", role="stream").start()
    b = WorkerProcess(env, tmp_path / "b.log", role="stream").start()
    sink = WorkerProcess(env, tmp_path / "sink.log", role="sink").start()
    try:
        for w in (a, b, sink):
            w.wait_ready(90)
        time.sleep(8)  # both stream workers in the group, partitions split
        codec = UsageCodec.schemaless()
        chunks = [events[i : i + 6_000] for i in range(0, len(events), 6_000)]
        for n, chunk in enumerate(chunks):
            by_tenant: dict[str, list[UsageEvent]] = {}
            for ev in chunk:
                by_tenant.setdefault(ev.tenant, []).append(ev)
            for tenant, evs in by_tenant.items():
                for i in range(0, len(evs), 50):
                    value, headers = codec.encode_batch(tenant, evs[i : i + 50])
                    producer.produce(kafka_settings.topic("usage"), key=tenant.encode(), value=value, headers=headers)
            producer.flush(10)
            if n == 4:
                time.sleep(1.0)
                _, metrics = a.get("/metrics")
                counted = [
                    line
                    for line in str(metrics).splitlines()
                    if line.startswith('costplane_worker_events_total{role="stream"}')
                ]
                assert counted and float(counted[0].split()[-1]) > 0, "worker a must own partitions when killed"
                a.kill()  # mid-stream: half the traffic counted, some of it maybe not yet committed
            time.sleep(0.7)

        r = redis.Redis.from_url(redis_settings.url.get_secret_value())
        prefix = redis_settings.key_prefix

        def counters() -> dict[str, int]:
            out = {}
            for t in TENANTS:
                counter = r.hgetall(f"{prefix}:{{{t}}}:spent:tenant-day:tenant={t}")
                values = [v for k, v in counter.items() if k.isdigit()]  # bucket fields, not the guard's state
                out[t] = sum(int(v) for v in values)
            return out

        deadline = time.monotonic() + 90
        seen = counters()
        while time.monotonic() < deadline and seen != tokens:
            time.sleep(1)
            seen = counters()
        diff = {t: seen.get(t, 0) - tokens[t] for t in tokens if seen.get(t, 0) != tokens[t]}
        # every window exact: nothing lost with the dead worker (diff < 0), nothing counted twice (diff > 0)
        assert seen == tokens, f"window counters off by {diff}"
        for t in TENANTS:
            decided = r.get(f"{prefix}:{{{t}}}:decision:tenant-day:tenant={t}") is not None
            assert decided == (tokens[t] >= limit), t

        spec = ReportOptions.parse("spend", by=["tenant"]).to_query_string()
        deadline = time.monotonic() + 60
        totals: dict[str, int] = {}
        while time.monotonic() < deadline:
            status, answer = sink.get("/api/report?" + spec, 30)
            assert status == 200, answer
            rows = answer["rows"]
            totals = {row["tenant"]: int(row["cost_nanos"]) for row in rows}
            if sum(int(row["attempts"]) for row in rows) >= len(events):
                break
            time.sleep(1)
        assert totals == cost
    finally:
        for w in (a, b, sink):
            w.stop()
