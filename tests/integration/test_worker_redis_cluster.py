"""``costplane worker`` on a Redis Cluster (``COSTPLANE_REDIS_CLUSTER=true``): three masters of real redis-server
processes, the real worker process and Kafka. Per-user budgets of tenants placed on every master; the worker's
windows commit on each tenant's master, its counters hold the exact totals, and a crossing writes a decision there
that the guard (built by the same factory) answers from.
"""

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
from confluent_kafka import Producer
from redis.cluster import ClusterNode, RedisCluster
from redis_cluster_nodes import running_cluster

from costplane.config import KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.enforcers import BudgetGuard
from costplane.enforcers.connect import open_store
from costplane.enforcers.keys import KeyLayout
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.identifiers import tenant_tag
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.chaos, pytest.mark.slow]
LIMIT = 1000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RedisCluster, int]]:
    with running_cluster(tmp_path / "cluster") as ports:
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports])
        yield client, ports[0]
        client.close()


def _tenants_on_every_master(cluster: RedisCluster, per_master: int) -> list[str]:
    """Tenant names whose hash slots put ``per_master`` of them on each master."""
    by_node: dict[str, list[str]] = {}
    for i in range(1000):
        tenant = f"co-{i}"
        owned = by_node.setdefault(cluster.get_node_from_key(f"{{{tenant_tag(tenant)}}}").name, [])
        if len(owned) < per_master:
            owned.append(tenant)
        if len(by_node) == 3 and all(len(v) == per_master for v in by_node.values()):
            return sorted(t for v in by_node.values() for t in v)
    raise AssertionError("no tenant spread found")


def _event(tenant: str, user: str, tokens: int) -> UsageEvent:
    return UsageEvent(
        event_id=str(uuid.uuid4()),
        occurred_at=int(time.time() * 1000),
        tenant=tenant,
        provider="openai",
        model="gpt-4o-mini",
        request_id=str(uuid.uuid4()),
        attempt=1,
        status="ok",
        input_tokens=tokens,
        output_tokens=0,
        user_id=user,
    )


def _produce(kafka: KafkaSettings, messages: list[list[UsageEvent]]) -> None:
    codec = UsageCodec.schemaless()
    producer = Producer(kafka.confluent_config())
    for events in messages:
        value, headers = codec.encode_batch(events[0].tenant, events)
        producer.produce(kafka.topic("usage"), key=events[0].tenant.encode(), value=value, headers=headers)
    assert producer.flush(10) == 0


def _wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _budget_set(env: dict[str, str], tenant: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "costplane.cli", "budget", "set", f"{tenant}-user-day"]
        + ["--scope", f"tenant={tenant},user=*", "--period", "day", "--limit-tokens", str(LIMIT)]
        + ["--action", "block"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_worker_counts_and_decides_on_a_redis_cluster(
    cluster: tuple[RedisCluster, int], kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    client, seed_port = cluster
    settings = load_settings(
        RedisSettings, url=f"redis://127.0.0.1:{seed_port}/0", key_prefix=f"wc{uuid.uuid4().hex[:8]}", cluster=True
    )
    keys = KeyLayout(settings.key_prefix)
    tenants = _tenants_on_every_master(client, 2)
    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=2))
    env = worker_env(kafka_settings, settings, None, usage_partitions=2)
    assert env["COSTPLANE_REDIS_CLUSTER"] == "true"
    for tenant in tenants:
        _budget_set(env, tenant)
    worker = WorkerProcess(env, tmp_path / "worker.log", role="stream").start()
    try:
        worker.wait_ready(90)
        # Two messages per tenant: u1 spends 400 + 700 (crosses the 1000 limit), u2 spends 100 + 250 + 5.
        first = [[_event(t, "u1", 400), _event(t, "u2", 100)] for t in tenants]
        second = [[_event(t, "u1", 700), _event(t, "u2", 250), _event(t, "u2", 5)] for t in tenants]
        _produce(kafka_settings, first)
        _produce(kafka_settings, second)
        expected = {"u1": 400 + 700, "u2": 100 + 250 + 5}

        def totals() -> dict[tuple[str, str], int]:
            out = {}
            for tenant in tenants:
                for user in expected:
                    counter = client.hgetall(keys.spent(tenant, f"{tenant}-user-day", f"tenant={tenant},user={user}"))
                    out[tenant, user] = sum(int(v) for f, v in counter.items() if f.isdigit())
            return out

        want = {(t, u): n for t in tenants for u, n in expected.items()}
        _wait_for(lambda: totals() == want, 60, f"exact counters {want}: {worker.log_tail()}")
        for tenant in tenants:
            member = f"tenant={tenant},user=u1"
            raw = _wait_for(lambda m=member, t=tenant: client.get(keys.decision(t, f"{t}-user-day", m)), 30, "decision")
            decision = json.loads(raw)
            assert decision["action"] == "block" and decision["member"] == member
            assert decision["spent"] == expected["u1"] and decision["limit"] == LIMIT
            assert client.get(keys.decision(tenant, f"{tenant}-user-day", f"tenant={tenant},user=u2")) is None
            assert client.hgetall(keys.budgets(tenant))  # the worker published the tenant's budgets to its master
        owners = {client.get_node_from_key(keys.budgets(t)).name for t in tenants}
        assert len(owners) == 3  # the worker wrote on every master

        guard = BudgetGuard(open_store(settings, timeout_s=1.0), decision_cache_s=0.0)
        for tenant in tenants:
            assert guard.check({"tenant": tenant, "user": "u1"}).kind == "block"
            scope = {"tenant": tenant, "user": "u2"}
            fits = guard.reserve(scope, provider="openai", model="gpt-4o-mini", prompt_tokens=45, max_tokens=600)
            assert fits.allowed and fits.answer.reason == ""  # 355 spent + 645 = the limit exactly
            over = guard.reserve(scope, provider="openai", model="gpt-4o-mini", prompt_tokens=1, max_tokens=0)
            assert over.answer.kind == "block" and over.answer.held == LIMIT
            fits.release()
        assert guard.metrics.fail_open._value.get() == 0
        # The worker's API reads the live state from every master (a SCAN of each node, then per-key reads).
        status, rows = worker.get("/api/budgets/status")
        assert status == 200, rows
        got = {(r["tenant"], r["member"]): (r["spent"], r["action"]) for r in rows}
        assert got == {
            (t, f"tenant={t},user={u}"): (n, "block" if n >= LIMIT else None)
            for t in tenants
            for u, n in expected.items()
        }
        assert worker.get("/readyz")[0] == 200
    finally:
        assert worker.stop() == 0, worker.log_tail()
