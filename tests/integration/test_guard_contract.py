"""One contract, three stores: the in-memory store behaves exactly like the Redis store with its Lua scripts, on one
Redis and on a three-master Redis Cluster."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis_cluster_nodes import running_cluster

from costplane.budgets import Budget, per_user_token_budgets_by_plan
from costplane.config import RedisSettings
from costplane.enforcers import BudgetGuard, InMemoryBudgetStore, RedisBudgetStore
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.store import BudgetStore

NOW = time.time()  # real Redis expires keys on the real clock, so the test clock starts there
GPT = {"provider": "openai", "model": "gpt-4o-mini"}


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One three-master Redis Cluster for the module's cluster cases (each test uses its own key prefix)."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as ports:
        client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports])
        yield client
        client.close()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.slow]),
    ]
)
def store_and_clock(request: pytest.FixtureRequest) -> Iterator[tuple[BudgetStore, Clock]]:
    clock = Clock()
    if request.param == "memory":
        yield InMemoryBudgetStore(KeyLayout("t"), clock=lambda: int(clock() * 1000)), clock
        return
    if request.param == "cluster":  # the tenants' keys spread over three masters; the same contract holds
        yield RedisBudgetStore(request.getfixturevalue("cluster"), KeyLayout(f"c{uuid.uuid4().hex[:8]}")), clock
        return
    settings: RedisSettings = request.getfixturevalue("redis_settings")
    client = redis.Redis.from_url(settings.url.get_secret_value())
    yield RedisBudgetStore(client, KeyLayout(settings.key_prefix)), clock
    for key in client.scan_iter(f"{settings.key_prefix}:*", count=10_000):
        client.delete(key)
    client.close()


def _guard(store: Any, clock: Clock, **kw: Any) -> BudgetGuard:
    return BudgetGuard(store, clock=clock, decision_cache_s=0.0, budget_cache_s=0.0, **kw)


def _usd(budget_id: str, scope: str, usd: str, **kw: Any) -> Budget:
    return Budget.from_cli(budget_id, scope=scope, limit_usd=usd, **kw)


def test_reserve_until_the_limit_then_block(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    store.publish_budgets("acme", [_usd("acme-day", "tenant=acme", "0.01")])
    guard = _guard(store, clock)
    worst = guard.core.catalog.worst_case_nanos("openai", "gpt-4o-mini", 1000, 1000)
    admitted = []
    for _ in range(200):
        r = guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=1000, **GPT)
        if not r.allowed:
            break
        admitted.append(r)
    assert len(admitted) == 10_000_000 // worst
    assert r.answer.kind == "block" and "acme-day" in r.answer.reason and r.answer.retry_after_s > 0
    assert r.answer.held == len(admitted) * worst and r.answer.limit == 10_000_000
    # Releasing one reservation frees exactly its room.
    admitted[0].release()
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=1000, **GPT).allowed


def test_settle_charges_actual_and_is_idempotent(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    store.publish_budgets("acme", [Budget.from_cli("tok", scope="tenant=acme", limit_tokens=5000)])
    guard = _guard(store, clock)
    r = guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=1000, **GPT)
    assert r.allowed
    r.settle({"input_tokens": 1000, "output_tokens": 500})
    r.settle({"input_tokens": 1000, "output_tokens": 500})  # no double charge
    # 1500 settled; 3500 left: a 3000-token call fits, a second does not.
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=2000, max_tokens=1000, **GPT).allowed
    assert not guard.reserve({"tenant": "acme"}, prompt_tokens=400, max_tokens=200, **GPT).allowed


def test_all_or_nothing_across_budgets(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    store.publish_budgets(
        "acme",
        [
            Budget.from_cli("tenant", scope="tenant=acme", limit_tokens=100_000),
            Budget.from_cli("user", scope="tenant=acme,user=*", limit_tokens=3000),
        ],
    )
    guard = _guard(store, clock)
    scope = {"tenant": "acme", "user": "u1"}
    assert guard.reserve(scope, prompt_tokens=1000, max_tokens=1000, **GPT).allowed
    refused = guard.reserve(scope, prompt_tokens=1000, max_tokens=1000, **GPT)
    assert refused.answer.budget_id == "user"
    # The refused call reserved nothing on the tenant budget either: another user still has the full room.
    assert guard.reserve({"tenant": "acme", "user": "u2"}, prompt_tokens=1000, max_tokens=1000, **GPT).allowed


def test_reservations_expire(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    store.publish_budgets("acme", [Budget.from_cli("tok", scope="tenant=acme", limit_tokens=2500)])
    guard = _guard(store, clock, reservation_ttl_s=30)
    guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=1000, **GPT)  # never settled: a crash
    assert not guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=1000, **GPT).allowed
    clock.t += 31
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=1000, **GPT).allowed


def test_stream_decisions_block_or_degrade_and_lift(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    budgets = [
        _usd("b", "tenant=acme,feature=*", "100"),
        _usd("d", "tenant=acme,user=*", "100", action="degrade:gpt-4o-mini"),
    ]
    store.publish_budgets("acme", budgets)
    guard = _guard(store, clock)
    scope = {"tenant": "acme", "feature": "search", "user": "u1"}
    end_ms = int(NOW * 1000) + 3_600_000
    store.write_decision(
        "acme",
        "d",
        "tenant=acme,user=u1",
        json.dumps({"action": "degrade", "budget_id": "d", "degrade_model": "gpt-4o-mini", "window_end_ms": end_ms}),
        end_ms,
    )
    r = guard.reserve(scope, provider="openai", model="gpt-4o", prompt_tokens=10, max_tokens=10)
    assert r.answer.kind == "degrade" and r.model == "gpt-4o-mini"
    store.write_decision(
        "acme",
        "b",
        "tenant=acme,feature=search",
        json.dumps({"action": "block", "budget_id": "b", "reason": "over $100", "window_end_ms": end_ms}),
        end_ms,
    )
    blocked = guard.check(scope)
    assert blocked.kind == "block" and blocked.retry_after_s == pytest.approx(3600)  # block beats degrade
    assert guard.check({"tenant": "acme", "feature": "chat"}).kind == "allow"  # other member unaffected
    store.clear_decision("acme", "b", "tenant=acme,feature=search")
    store.clear_decision("acme", "d", "tenant=acme,user=u1")
    assert guard.check(scope).kind == "allow"


def test_degrade_budget_answers_degrade_when_it_would_be_exceeded(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    store.publish_budgets(
        "acme", [Budget.from_cli("soft", scope="tenant=acme", limit_tokens=1000, action="degrade:gpt-4o-mini")]
    )
    guard = _guard(store, clock)
    r = guard.reserve({"tenant": "acme"}, provider="openai", model="gpt-4o", prompt_tokens=900, max_tokens=500)
    assert r.allowed and r.answer.kind == "degrade" and r.model == "gpt-4o-mini"


def test_reconcile_sets_the_authoritative_total(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    budget = Budget.from_cli("tok", scope="tenant=acme", limit_tokens=10_000)
    store.publish_budgets("acme", [budget])
    guard = _guard(store, clock)
    from costplane.budgets import bucket_for

    bucket = bucket_for(budget.period, budget.tz, int(NOW * 1000))
    store.reconcile("acme", "tok", "tenant=acme", bucket.start_ms, 9_500, 86_400_000)
    assert not guard.reserve({"tenant": "acme"}, prompt_tokens=400, max_tokens=200, **GPT).allowed
    store.reconcile("acme", "tok", "tenant=acme", bucket.start_ms, 1_000, 86_400_000)
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=400, max_tokens=200, **GPT).allowed


def test_per_user_token_budgets_by_plan(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    store.publish_budgets("acme", per_user_token_budgets_by_plan("acme", {"free": 2000, "pro": 50_000}))
    guard = _guard(store, clock)
    free = {"tenant": "acme", "user": "u1", "plan": "free"}
    pro = {"tenant": "acme", "user": "u2", "plan": "pro"}
    assert guard.reserve(free, prompt_tokens=1000, max_tokens=500, **GPT).allowed
    assert not guard.reserve(free, prompt_tokens=1000, max_tokens=500, **GPT).allowed
    assert all(guard.reserve(pro, prompt_tokens=1000, max_tokens=500, **GPT).allowed for _ in range(10))


def test_no_budgets_means_allow(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    guard = _guard(store, clock)
    assert guard.reserve({"tenant": "nobody"}, prompt="hello", **GPT).allowed
    assert guard.check({"tenant": "nobody"}).kind == "allow"


def test_rolling_window_forgets_spend_once_its_bucket_leaves(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    store.publish_budgets("acme", [Budget.from_cli("m", scope="tenant=acme", period="rolling-1m", limit_tokens=3000)])
    guard = _guard(store, clock)
    guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=1000, **GPT).settle(
        {"input_tokens": 1000, "output_tokens": 1000}
    )
    clock.t += 30
    assert not guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=500, **GPT).allowed  # 2000 + 1500
    clock.t += 31  # the first call's 5-second bucket is now older than the minute
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=1500, **GPT).allowed


def test_a_settle_after_expiry_still_charges_once(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    store.publish_budgets("acme", [Budget.from_cli("tok", scope="tenant=acme", limit_tokens=5000)])
    guard = _guard(store, clock, reservation_ttl_s=30)
    slow = guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=1000, **GPT)
    clock.t += 31  # the call outlived its reservation; the next reserve purges it
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=2000, max_tokens=1000, **GPT).allowed  # 3000 held
    slow.settle({"input_tokens": 1000, "output_tokens": 900})  # really spent: charged although it had expired
    assert store.settle(slow.request, 0, 1900, int(clock() * 1000)) is False  # a second settle changes nothing
    assert not guard.reserve({"tenant": "acme"}, prompt_tokens=100, max_tokens=50, **GPT).allowed  # 4900 + 150
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=50, max_tokens=50, **GPT).allowed  # 4900 + 100


def test_a_degraded_call_is_charged_to_the_budget_that_degraded_it(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    store.publish_budgets(
        "acme",
        [
            Budget.from_cli("soft", scope="tenant=acme", limit_tokens=1000, action="degrade:gpt-4o-mini"),
            Budget.from_cli("hard", scope="tenant=acme", limit_tokens=100_000),
        ],
    )
    guard = _guard(store, clock)
    r = guard.reserve({"tenant": "acme"}, provider="openai", model="gpt-4o", prompt_tokens=900, max_tokens=500)
    assert r.answer.kind == "degrade"
    r.settle({"input_tokens": 900, "output_tokens": 50})
    # 950 settled on the soft budget too: a call that fitted before (50 + 10) now degrades.
    small = guard.reserve({"tenant": "acme"}, provider="openai", model="gpt-4o", prompt_tokens=50, max_tokens=10)
    assert small.answer.kind == "degrade"


def test_a_changed_limit_counts_at_once(store_and_clock: tuple[Any, Clock]) -> None:
    store, clock = store_and_clock
    store.publish_budgets("acme", [Budget.from_cli("tok", scope="tenant=acme", limit_tokens=5000)])
    guard = _guard(store, clock)
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=2000, max_tokens=1000, **GPT).allowed  # 3000 held
    store.publish_budgets("acme", [Budget.from_cli("tok", scope="tenant=acme", limit_tokens=3050)])
    refused = guard.reserve({"tenant": "acme"}, prompt_tokens=50, max_tokens=50, **GPT)
    assert not refused.allowed and refused.answer.held == 3000 and refused.answer.limit == 3050
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=25, max_tokens=25, **GPT).allowed


def test_a_settle_after_its_bucket_rolled_over_charges_the_bucket_it_happens_in(
    store_and_clock: tuple[Any, Clock],
) -> None:
    store, clock = store_and_clock
    store.publish_budgets("acme", [Budget.from_cli("m", scope="tenant=acme", period="rolling-1m", limit_tokens=3000)])
    guard = _guard(store, clock)
    clock.t = (int(NOW) // 5 + 1) * 5 + 1.0  # one second into a 5-second bucket
    slow = guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=1000, **GPT)
    clock.t += 6  # the next bucket: reserves beside this settle already use the next window
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=400, max_tokens=100, **GPT).allowed  # 2000 + 500 held
    slow.settle({"input_tokens": 1000, "output_tokens": 1000})
    assert not guard.reserve({"tenant": "acme"}, prompt_tokens=400, max_tokens=200, **GPT).allowed  # 2500 + 600
    clock.t += 55  # the reservation's bucket has left the minute, the settle's has not: its 2000 still count
    assert not guard.reserve({"tenant": "acme"}, prompt_tokens=400, max_tokens=200, **GPT).allowed
    clock.t += 10  # the settle's bucket has left too: only the 500 still reserved count
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=1000, max_tokens=1000, **GPT).allowed
