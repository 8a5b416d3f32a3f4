"""Stream workers come and go mid-stream (plus a separate sink process); budget windows (the guard's reconciled
counters), decisions and the ClickHouse totals stay exact.

* Two workers share 6 partitions and one is SIGKILLed: the survivor takes its partitions over from the windows in
  Redis (fenced by offsets).
* One worker runs alone, a second JOINS under load (the rebalance hands it partitions) and later LEAVES with a clean
  stop (SIGTERM): its partitions go back to the first from the windows it committed.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer

from costplane.budgets import Budget
from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.publisher.event import UsageEvent
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env
from costplane.streams.worker.testload import (
    assert_running,
    expected_totals,
    metric,
    poll_until,
    publish,
    tokens_by_tenant,
    wait_totals,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse, pytest.mark.chaos]

TENANTS = tuple(f"tenant{i}" for i in range(12))
BUDGET_ID = "tenant-day"


def make_events(
    n: int,
    seed: int,
    *,
    weights: Sequence[int] | None = None,
    max_tokens: tuple[int, int] = (3000, 900),
    tag: str = "r",
) -> list[UsageEvent]:
    """``n`` events of TENANTS (uniform, or by ``weights``), each with up to ``max_tokens`` (input, output)."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    return [
        UsageEvent(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            occurred_at=now - rng.randrange(30_000),
            tenant=rng.choice(TENANTS) if weights is None else rng.choices(TENANTS, weights)[0],
            provider="openai",
            model="gpt-4o-mini",
            request_id=f"{tag}{i}",
            attempt=1,
            status="ok",
            input_tokens=rng.randrange(1, max_tokens[0]),
            output_tokens=rng.randrange(1, max_tokens[1]),
            feature=rng.choice(("chat", "search")),
            user_id=f"u{rng.randrange(50)}",
        )
        for i in range(n)
    ]


def open_budget(kafka: KafkaSettings, limit: int) -> Producer:
    """Topics (6 usage partitions) and a per-tenant daily token budget of ``limit``; returns the producer."""
    create_topics(kafka, load_settings(WorkerSettings, usage_partitions=6))
    budget = Budget(id=BUDGET_ID, scope={"tenant": "*"}, period="day", unit="tokens", limit=limit, version=1)
    producer = Producer({**kafka.confluent_config(), "linger.ms": 10})
    producer.produce(kafka.topic("budgets"), key=budget.id.encode(), value=budget.to_json().encode())
    assert producer.flush(10) == 0
    return producer


def publish_paced(
    producer: Producer,
    kafka: KafkaSettings,
    events: Sequence[UsageEvent],
    chunk: int,
    pause_s: float,
    after_chunk: Callable[[int], None] | None = None,
) -> None:
    """Publish ``events`` ``chunk`` at a time, ``pause_s`` apart; ``after_chunk(n)`` runs after chunk ``n``."""
    for n, start in enumerate(range(0, len(events), chunk)):
        publish(producer, kafka, events[start : start + chunk])
        if after_chunk is not None:
            after_chunk(n)
        time.sleep(pause_s)


def stream_events(worker: WorkerProcess) -> float:
    """Events the worker's stream role has counted into windows."""
    return metric(worker, "costplane_worker_events_total", role="stream") or 0.0


def window_counters(r: redis.Redis, prefix: str) -> dict[str, int]:
    """Each tenant's budget window as the guard reads it: the sum of its bucket fields (not the guard's state)."""
    out = {}
    for t in TENANTS:
        counter = r.hgetall(f"{prefix}:{{{t}}}:spent:{BUDGET_ID}:tenant={t}")
        out[t] = sum(int(v) for k, v in counter.items() if k.isdigit())
    return out


def assert_windows_and_decisions(
    redis_settings: RedisSettings, events: Sequence[UsageEvent], limit: int, *alive: WorkerProcess
) -> None:
    """Every window equals its tenant's tokens (diff < 0: lost; > 0: counted twice) and exactly the tenants at or
    over ``limit`` have a decision."""
    tokens = {t: 0 for t in TENANTS} | tokens_by_tenant(events)
    r = redis.Redis.from_url(redis_settings.url.get_secret_value())
    prefix = redis_settings.key_prefix
    seen = poll_until(lambda: window_counters(r, prefix), lambda s: s == tokens, 120, *alive, every_s=1.0)
    diff = {t: seen[t] - tokens[t] for t in TENANTS if seen[t] != tokens[t]}
    assert seen == tokens, f"window counters off by {diff}"
    for t in TENANTS:
        decided = r.get(f"{prefix}:{{{t}}}:decision:{BUDGET_ID}:tenant={t}") is not None
        assert decided == (tokens[t] >= limit), t


def assert_clickhouse_totals(sink: WorkerProcess, events: Sequence[UsageEvent]) -> None:
    truth = expected_totals(events)
    assert wait_totals(sink, sum(c for c, _ in truth.values()), 120) == truth


def test_two_workers_one_killed_keep_windows_decisions_and_totals_exact(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    clickhouse_settings: ClickHouseSettings,
    tmp_path: Path,
) -> None:
    events = make_events(60_000, seed=11)
    limit = sorted(tokens_by_tenant(events).values())[len(TENANTS) // 2]  # about half the tenants end over it
    producer = open_budget(kafka_settings, limit)

    ch = clickhouse_settings.model_copy(update={"chdb_path": tmp_path / "chdb"})
    env = worker_env(kafka_settings, redis_settings, ch, usage_partitions=6)
    a = WorkerProcess(env, tmp_path / "a.log", role="stream").start()
    b = WorkerProcess(env, tmp_path / "b.log", role="stream").start()
    sink = WorkerProcess(env, tmp_path / "sink.log", role="sink").start()
    try:
        for w in (a, b, sink):
            w.wait_ready(90)
        time.sleep(8)  # both stream workers in the group, partitions split

        def kill_a_halfway(n: int) -> None:
            if n == 4:
                counted = poll_until(lambda: stream_events(a), bool, 60, a)
                assert counted > 0, "worker a must own partitions when killed"
                a.kill()  # mid-stream: half the traffic counted, some of it maybe not yet committed

        publish_paced(producer, kafka_settings, events, 6_000, 0.7, kill_a_halfway)
        assert_windows_and_decisions(redis_settings, events, limit, b, sink)
        assert_clickhouse_totals(sink, events)
    finally:
        for w in (a, b, sink):
            w.stop()


def test_a_second_worker_joins_and_leaves_mid_stream_windows_decisions_and_totals_exact(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    clickhouse_settings: ClickHouseSettings,
    tmp_path: Path,
) -> None:
    """Load before the join, while the joiner waits for partitions, while both run, and after it left."""
    spread = range(1, len(TENANTS) + 1)  # tenants' traffic 1:2:…:12, so their totals lie far apart
    before, both, after = (make_events(6_000, seed=s, weights=spread, tag=f"s{s}-") for s in (21, 23, 24))
    # Published only until the joiner counts some: small requests, so however many it takes moves no tenant
    # across the budget (tens of thousands of tokens at most, against totals hundreds of thousands apart).
    joining = make_events(60_000, seed=22, max_tokens=(20, 5), tag="s22-")
    ranked = sorted(tokens_by_tenant(before + both + after).values())
    margin = (ranked[6] - ranked[5]) // 2
    limit = ranked[5] + margin  # six tenants under, six over
    assert margin > max(tokens_by_tenant(joining).values()), "tenant totals too close for the joining-phase load"
    producer = open_budget(kafka_settings, limit)

    ch = clickhouse_settings.model_copy(update={"chdb_path": tmp_path / "chdb"})
    env = worker_env(kafka_settings, redis_settings, ch, usage_partitions=6)
    a = WorkerProcess(env, tmp_path / "a.log", role="stream").start()
    sink = WorkerProcess(env, tmp_path / "sink.log", role="sink").start()
    b = WorkerProcess(env, tmp_path / "b.log", role="stream")
    try:
        for w in (a, sink):
            w.wait_ready(90)
        publish_paced(producer, kafka_settings, before, 500, 0.3)
        assert poll_until(lambda: stream_events(a), bool, 60, a, sink) > 0, a.log_tail()
        b.start()
        published = before + join_under_load(producer, kafka_settings, b, joining, a, sink)
        publish_paced(producer, kafka_settings, both, 500, 0.3)
        assert stream_events(b) > 0
        b.terminate()  # leaves while the load goes on
        publish_paced(producer, kafka_settings, after[:3_000], 500, 0.3)
        assert b.wait_exit(60) == 0, f"the leaving worker did not stop cleanly:\n{b.log_tail()}"
        publish_paced(producer, kafka_settings, after[3_000:], 500, 0.3)
        published += both + after

        assert_windows_and_decisions(redis_settings, published, limit, a, sink)
        assert_clickhouse_totals(sink, published)
    finally:
        for w in (a, b, sink):
            w.stop()


def join_under_load(
    producer: Producer,
    kafka: KafkaSettings,
    joiner: WorkerProcess,
    events: Sequence[UsageEvent],
    *alive: WorkerProcess,
    timeout_s: float = 180.0,
) -> list[UsageEvent]:
    """Publish ``events`` 250 at a time until the joining worker has counted some of its own (the rebalance handed
    it partitions); returns what was published."""
    deadline = time.monotonic() + timeout_s
    sent = 0
    while stream_events_if_up(joiner) == 0:
        for w in (*alive, joiner):
            assert_running(w)
        assert time.monotonic() < deadline, f"the joining worker got no partitions in {timeout_s} s"
        assert sent < len(events), "published every joining-phase event and the joiner counted none"
        publish(producer, kafka, events[sent : sent + 250])
        sent += 250
        time.sleep(0.5)
    return list(events[:sent])


def stream_events_if_up(worker: WorkerProcess) -> float:
    """:func:`stream_events`, 0 while the worker's web server is not up yet."""
    try:
        return stream_events(worker)
    except OSError:
        return 0.0
