"""One tenant's bad budget or corrupt counter never opens the guard's circuit breaker for the others.

Before: a budget whose counter could not be enforced made every one of its calls fail in the script, three failures
opened the process-wide breaker, and another tenant already over its budget was let through by the fail-open policy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from costplane.budgets import Budget
from costplane.config import RedisSettings
from costplane.enforcers import BudgetGuard, RedisBudgetStore
from costplane.enforcers.guard import UNAVAILABLE
from costplane.enforcers.keys import KeyLayout

pytestmark = [pytest.mark.redis, pytest.mark.chaos]
GPT = {"provider": "openai", "model": "gpt-4o-mini"}


@pytest.fixture
def store(redis_settings: RedisSettings) -> Iterator[RedisBudgetStore]:
    client = redis.Redis.from_url(redis_settings.url.get_secret_value())
    yield RedisBudgetStore(client, KeyLayout(redis_settings.key_prefix))
    for key in client.scan_iter(f"{redis_settings.key_prefix}:*", count=10_000):
        client.delete(key)
    client.close()


def test_a_corrupt_tenant_does_not_open_the_breaker_for_others(store: RedisBudgetStore) -> None:
    store.publish_budgets("good", [Budget.from_cli("tok", scope="tenant=good", limit_tokens=1000)])
    bad_budget = Budget.from_cli("tok", scope="tenant=bad", limit_tokens=1000)
    store.publish_budgets("bad", [bad_budget])
    guard = BudgetGuard(store, decision_cache_s=0.0, budget_cache_s=0.0)
    # "bad"'s counter is a key of another type: every reservation of "bad" gets an error reply (WRONGTYPE).
    now_ms = int(time.time() * 1000)
    bad_plan = guard.core.plans(store.keys).plan((("tenant", "bad"),), "bad", {"tenant": "bad"}, [bad_budget], now_ms)
    store.client.set(bad_plan.slots[0].counter_key, "not a hash")
    # "good" spends its whole budget: 1000 tokens.
    assert guard.reserve({"tenant": "good"}, prompt_tokens=500, max_tokens=500, **GPT).allowed
    answers = {"good": 0, "bad": 0}
    for _ in range(145):  # "bad" is the busier tenant: four of its calls for each of "good"'s
        for _ in range(4):
            bad = guard.reserve({"tenant": "bad"}, prompt_tokens=10, max_tokens=10, **GPT)
            assert bad.answer.reason == UNAVAILABLE  # the failure policy answers for "bad" (fail-open by default)
            answers["bad"] += bad.allowed
        answers["good"] += guard.reserve({"tenant": "good"}, prompt_tokens=10, max_tokens=10, **GPT).allowed
    assert answers == {"good": 0, "bad": 4 * 145}
    assert not guard.core.breaker.open


def test_an_unenforceable_stored_budget_is_skipped_not_fatal(store: RedisBudgetStore) -> None:
    """A budget written before limits were bounded (1e30 tokens) is skipped; the tenant's other budgets hold."""
    good = Budget.from_cli("small", scope="tenant=acme", limit_tokens=100)
    huge = json.loads(Budget.from_cli("huge", scope="tenant=acme", limit_tokens=10).to_json())
    huge["limit"] = 10**30
    store.client.hset(store.keys.budgets("acme"), mapping={"small": good.to_json(), "huge": json.dumps(huge)})
    guard = BudgetGuard(store, decision_cache_s=0.0, budget_cache_s=0.0)
    assert [b.id for b in store.load_budgets("acme")] == ["small"]
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=50, max_tokens=50, **GPT).allowed
    refused = guard.reserve({"tenant": "acme"}, prompt_tokens=1, max_tokens=1, **GPT)
    assert refused.answer.kind == "block" and refused.answer.budget_id == "small"
    assert not guard.core.breaker.open


def test_members_that_used_to_collide_are_counted_apart(store: RedisBudgetStore) -> None:
    """(team ``a,user=b``, user ``X``) and (team ``a``, user ``b,user=X``) were one member: a user who spent
    nothing was blocked by the other's spend. Escaped members keep them apart, on real Redis."""
    store.publish_budgets("acme", [Budget.from_cli("pu", scope="tenant=acme,team=*,user=*", limit_tokens=100)])
    guard = BudgetGuard(store, decision_cache_s=0.0, budget_cache_s=0.0)
    spender = {"tenant": "acme", "team": "a,user=b", "user": "X"}
    other = {"tenant": "acme", "team": "a", "user": "b,user=X"}
    assert guard.reserve(spender, prompt_tokens=50, max_tokens=50, **GPT).allowed
    assert guard.reserve(spender, prompt_tokens=1, max_tokens=1, **GPT).answer.kind == "block"
    assert guard.reserve(other, prompt_tokens=50, max_tokens=50, **GPT).allowed
    hostile = {"tenant": "acme}:x", "user": "u"}  # a tenant the contract refuses: its keys stay in their own slot
    assert guard.reserve(hostile, prompt_tokens=1, max_tokens=1, **GPT).allowed
    keys = [k.decode() for k in store.client.scan_iter(f"{store.keys.prefix}:*", count=1000)]
    assert all("}" not in k[k.index("{") + 1 : k.index("}")] for k in keys)
    assert sorted(k.split("}", 1)[0] + "}" for k in keys) == [f"{store.keys.prefix}:{{acme}}"] * len(keys)
