"""Redis Cluster, really: three masters of real redis-server processes (started here, loopback, free ports, joined by
``redis-cli --cluster create``) run the guard's contract and the worker's window commits, proving the hash-tag
design docs/enforcement.md claims: every key of a tenant lives in that tenant's slot, so every script runs on one
node, and tenants spread over every master.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import ClusterNode, RedisCluster
from redis_cluster_nodes import running_cluster

from costplane.budgets import Budget
from costplane.enforcers import (
    AsyncBudgetGuard,
    AsyncRedisBudgetStore,
    BudgetGuard,
    FailurePolicy,
    RedisBudgetStore,
)
from costplane.enforcers.keys import KeyLayout
from costplane.publisher.event import UsageEvent
from costplane.publisher.identifiers import tenant_tag
from costplane.streams.core.priced import PricedEvent
from costplane.streams.worker.windows import Located, WorkerWindows
from costplane.streams.worker.windowstore import MemoryWindowBackend, RedisWindowBackend, WindowKeys

pytestmark = [pytest.mark.redis, pytest.mark.chaos, pytest.mark.slow]
GPT = {"provider": "openai", "model": "gpt-4o-mini"}
TENANTS = [f"tenant-{i}" for i in range(24)] + ["a.b:c@d+e/f", "x" * 128]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A fresh cluster per test (a second or two): function scope, so the test's markers let it open sockets."""
    with running_cluster(tmp_path / "cluster") as ports:
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports])
        yield client
        client.close()


def test_each_tenant_keeps_one_slot_and_tenants_use_every_master(cluster: RedisCluster) -> None:
    keys, win = KeyLayout("cp"), WindowKeys("cp", "g")
    owners = set()
    for tenant in TENANTS:
        member = f"tenant={tenant},user=u%2C1"
        names = [
            keys.budgets(tenant),
            keys.decision(tenant, "b", member),
            keys.spent(tenant, "b", member),
            win.meta(tenant),
            win.tenant_window(tenant, f"b|{member}"),
        ]
        slots = {int(cluster.execute_command("CLUSTER KEYSLOT", name)) for name in names}
        assert slots == {int(cluster.execute_command("CLUSTER KEYSLOT", f"{{{tenant_tag(tenant)}}}"))}
        owners.add(cluster.get_node_from_key(names[0]).name)
    assert len(owners) == 3  # the design spreads tenants over every master


def test_guard_contract_on_the_cluster(cluster: RedisCluster) -> None:
    prefix = f"c{uuid.uuid4().hex[:6]}"
    store = RedisBudgetStore(cluster, KeyLayout(prefix))
    guard = BudgetGuard(store, decision_cache_s=0.0, budget_cache_s=0.0)
    for tenant in TENANTS:  # on every master: reserve to the limit, then block; settle charges, exactly
        store.publish_budgets(tenant, [Budget.from_cli("tok", scope=f"tenant={tenant},user=*", limit_tokens=1000)])
        scope = {"tenant": tenant, "user": "u,1"}
        held = [guard.reserve(scope, prompt_tokens=100, max_tokens=100, **GPT) for _ in range(5)]
        assert all(r.allowed for r in held)
        refused = guard.reserve(scope, prompt_tokens=1, max_tokens=1, **GPT)
        assert refused.answer.kind == "block" and refused.answer.held == 1000
        held[0].settle({"input_tokens": 50, "output_tokens": 0})  # 200 reserved, 50 used: 150 back
        assert guard.reserve(scope, prompt_tokens=100, max_tokens=50, **GPT).allowed
        assert not guard.reserve(scope, prompt_tokens=1, max_tokens=1, **GPT).allowed
    # A stream decision blocks before any reservation, on the decision key's node.
    tenant = TENANTS[0]
    member = "tenant=" + tenant + ",user=u%2C2"
    store.write_decision(
        tenant, "tok", member, json.dumps({"action": "block", "budget_id": "tok"}), int(time.time() * 1000) + 60_000
    )
    assert guard.reserve({"tenant": tenant, "user": "u,2"}, prompt_tokens=1, max_tokens=1, **GPT).answer.kind == "block"
    assert not guard.core.breaker.open


def _located(tenant: str, user: str, tokens: int, offset: int, now: int) -> Located:
    ev = UsageEvent(
        event_id=str(uuid.uuid4()),
        occurred_at=now,
        tenant=tenant,
        provider="openai",
        model="m",
        request_id=str(uuid.uuid4()),
        attempt=1,
        status="ok",
        input_tokens=tokens,
        user_id=user,
    )
    return Located(PricedEvent(ev, 10 * tokens, "v1"), offset % 3, offset)


def test_window_commits_on_the_cluster_match_the_memory_backend(cluster: RedisCluster) -> None:
    prefix = f"w{uuid.uuid4().hex[:6]}"
    keys, layout = WindowKeys(prefix, "g"), KeyLayout(prefix)
    budget = Budget(id="b", scope={"tenant": "*", "user": "*"}, unit="tokens", limit=1000, version=1)
    now = int(time.time() * 1000)
    batches = [[_located(t, f"u{i % 2}", 300 + i, n * 100 + i, now) for i, t in enumerate(TENANTS)] for n in range(4)]

    def run(
        backend: RedisWindowBackend | MemoryWindowBackend, wkeys: WindowKeys, klayout: KeyLayout
    ) -> list[tuple[str, str, int]]:
        windows = WorkerWindows(backend, wkeys, klayout)
        out = []
        for batch in [*batches, batches[1]]:  # the second batch is redelivered: fenced, not counted again
            pending = windows.count(batch, [budget], now)
            out += [(d.type, d.member, d.spent) for d in pending.decisions]
            assert windows.commit(pending).fenced == []
        return sorted(out)

    memory = MemoryWindowBackend()
    assert run(RedisWindowBackend(cluster, keys), keys, layout) == run(memory, memory.keys, KeyLayout("mem"))
    for tenant in TENANTS:  # the guard's counters on each tenant's node hold the exact totals
        for user in ("u0", "u1"):
            mine = [
                loc
                for batch in batches
                for loc in batch
                if loc.priced.event.tenant == tenant and loc.priced.event.user_id == user
            ]
            counter = cluster.hgetall(layout.spent(tenant, "b", f"tenant={tenant},user={user}"))
            spent = sum(int(v) for k, v in counter.items() if k.isdigit())
            assert spent == sum(loc.priced.event.input_tokens for loc in mine)


def test_asyncio_guard_on_the_cluster(cluster: RedisCluster) -> None:
    """``AsyncRedisBudgetStore.from_url(..., cluster=True)``: the asyncio cluster client routes the same scripts."""
    prefix = f"a{uuid.uuid4().hex[:6]}"
    seed = cluster.get_primaries()[0]
    sync_store = RedisBudgetStore(cluster, KeyLayout(prefix))
    tenants = TENANTS[:6]
    for tenant in tenants:
        sync_store.publish_budgets(tenant, [Budget.from_cli("tok", scope=f"tenant={tenant}", limit_tokens=300)])

    async def scenario() -> list[tuple[bool, bool, bool]]:
        store = AsyncRedisBudgetStore.from_url(
            f"redis://{seed.host}:{seed.port}/0", prefix=prefix, timeout_s=1.0, cluster=True
        )
        guard = AsyncBudgetGuard(store, decision_cache_s=0.0, budget_cache_s=0.0)
        out = []
        for tenant in tenants:
            first = await guard.reserve({"tenant": tenant}, prompt_tokens=100, max_tokens=100, **GPT)
            refused = await guard.reserve({"tenant": tenant}, prompt_tokens=100, max_tokens=100, **GPT)  # 400 > 300
            await first.asettle({"input_tokens": 100, "output_tokens": 0})  # 100 spent, the rest released
            again = await guard.reserve({"tenant": tenant}, prompt_tokens=100, max_tokens=100, **GPT)  # 300 = limit
            await again.asettle({"input_tokens": 1, "output_tokens": 0})
            out.append((first.allowed, refused.answer.kind == "block", again.allowed))
        await store.client.aclose()
        return out

    assert asyncio.run(scenario()) == [(True, True, True)] * len(tenants)
    for tenant in tenants:
        counter = cluster.hgetall(KeyLayout(prefix).spent(tenant, "tok", f"tenant={tenant}"))
        assert sum(int(v) for f, v in counter.items() if f.isdigit()) == 101


def test_a_dead_master_never_raises_into_the_app(cluster: RedisCluster) -> None:
    """SIGKILL one master: its tenants' calls get the failure policy's answer (fail-open counted, fail-closed Block
    ``enforcement_unavailable``), a settle of a reservation made before is logged, and nothing raises."""
    prefix = f"k{uuid.uuid4().hex[:6]}"
    keys = KeyLayout(prefix)
    seed, *others = cluster.get_primaries()
    store = RedisBudgetStore.from_url(f"redis://{seed.host}:{seed.port}/0", prefix=prefix, timeout_s=0.2, cluster=True)
    policy = FailurePolicy(rules=[({"plan": "free"}, "closed")])
    guard = BudgetGuard(store, policy=policy, decision_cache_s=0.0, budget_cache_s=0.0)
    for tenant in TENANTS:
        store.publish_budgets(tenant, [Budget.from_cli("tok", scope=f"tenant={tenant}", limit_tokens=10**6)])
    victim = others[0]
    doomed = [t for t in TENANTS if cluster.get_node_from_key(keys.budgets(t)).name == victim.name]
    assert doomed
    held = guard.reserve({"tenant": doomed[0]}, prompt_tokens=10, max_tokens=10, **GPT)
    assert held.allowed and held.answer.reason == ""
    pid = int(cluster.get_redis_connection(victim).info("server")["process_id"])
    os.kill(pid, signal.SIGKILL)
    held.settle({"input_tokens": 10})  # logged; the reservation would expire by its TTL
    for _ in range(10):
        for tenant in doomed:
            paid = guard.reserve({"tenant": tenant, "plan": "paid"}, prompt_tokens=1, max_tokens=1, **GPT)
            free = guard.reserve({"tenant": tenant, "plan": "free"}, prompt_tokens=1, max_tokens=1, **GPT)
            assert (paid.answer.kind, paid.answer.reason) == ("allow", "enforcement_unavailable")
            assert (free.answer.kind, free.answer.reason) == ("block", "enforcement_unavailable")
        time.sleep(0.1)
    assert guard.metrics.fail_open._value.get() == 10 * len(doomed)
    assert guard.metrics.fail_closed._value.get() == 10 * len(doomed)
