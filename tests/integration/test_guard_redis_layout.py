"""What the guard leaves in Redis: one expiring counter hash per budget member, kept in step by the worker."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from costplane.budgets import Budget, bucket_for
from costplane.config import RedisSettings
from costplane.enforcers import BudgetGuard, RedisBudgetStore
from costplane.enforcers.keys import KeyLayout

pytestmark = pytest.mark.redis
GPT = {"provider": "openai", "model": "gpt-4o-mini"}


@pytest.fixture
def store(redis_settings: RedisSettings) -> Iterator[RedisBudgetStore]:
    client = redis.Redis.from_url(redis_settings.url.get_secret_value())
    yield RedisBudgetStore(client, KeyLayout(redis_settings.key_prefix))
    for key in client.scan_iter(f"{redis_settings.key_prefix}:*", count=10_000):
        client.delete(key)
    client.close()


def _keys(store: RedisBudgetStore) -> list[str]:
    return sorted(k.decode() for k in store.client.scan_iter(f"{store.keys.prefix}:*", count=10_000))


def test_reserve_and_settle_leave_only_expiring_counters(store: RedisBudgetStore) -> None:
    store.publish_budgets(
        "acme",
        [
            Budget.from_cli("day", scope="tenant=acme", limit_tokens=10**6),
            Budget.from_cli("hour", scope="tenant=acme,user=*", period="rolling-1h", limit_tokens=10**6),
        ],
    )
    guard = BudgetGuard(store, decision_cache_s=0.0)
    for i in range(50):
        guard.reserve({"tenant": "acme", "user": f"u{i % 2}"}, prompt_tokens=10, max_tokens=10, **GPT).settle(
            {"input_tokens": 10, "output_tokens": 5}
        )
    counters = [
        store.keys.spent("acme", "day", "tenant=acme"),
        store.keys.spent("acme", "hour", "tenant=acme,user=u0"),
        store.keys.spent("acme", "hour", "tenant=acme,user=u1"),
    ]
    # No key per reservation or per settle: a busy app does not grow Redis by one key per call.
    assert _keys(store) == sorted([store.keys.budgets("acme"), *counters])
    for key in counters:
        assert store.client.pttl(key) > 3_600_000  # gone on its own once the window is over
        fields = store.client.hgetall(key)
        assert not [f for f in fields if f.startswith(b"r")]  # every reservation settled and removed
        buckets = sum(int(v) for f, v in fields.items() if f.isdigit())
        state = fields[b"_k"]  # the one state field in force: spent + open - limit
        assert sorted(f for f in fields if f.startswith(b"_")) == sorted([state, b"_k"])
        assert buckets == int(fields[state]) + 10**6 == (750 if "day" in key else 375)  # state = its buckets


def test_reconcile_through_the_workers_pipeline_moves_the_guards_total(store: RedisBudgetStore) -> None:
    budget = Budget.from_cli("day", scope="tenant=acme", limit_tokens=10_000)
    store.publish_budgets("acme", [budget])
    guard = BudgetGuard(store, decision_cache_s=0.0)
    guard.reserve({"tenant": "acme"}, prompt_tokens=100, max_tokens=100, **GPT).settle({"input_tokens": 150})
    now_ms = int(time.time() * 1000)
    bucket = bucket_for(budget.period, budget.tz, now_ms).start_ms
    pipe = store.client.pipeline(transaction=False)
    RedisBudgetStore(pipe, store.keys).reconcile("acme", "day", "tenant=acme", bucket, 9_900, 86_400_000)
    pipe.execute()
    assert not guard.reserve({"tenant": "acme"}, prompt_tokens=100, max_tokens=100, **GPT).allowed
    # A bucket the window has left is not kept and does not count.
    store.reconcile("acme", "day", "tenant=acme", bucket - 86_400_000, 5_000, 86_400_000)
    assert store.client.hget(store.keys.spent("acme", "day", "tenant=acme"), str(bucket - 86_400_000)) is None
    store.reconcile("acme", "day", "tenant=acme", bucket, 9_000, 86_400_000)
    assert guard.reserve({"tenant": "acme"}, prompt_tokens=500, max_tokens=400, **GPT).allowed


def test_a_counter_of_the_earlier_layout_is_rebuilt_by_the_first_reserve(store: RedisBudgetStore) -> None:
    budget = Budget.from_cli("day", scope="tenant=acme", limit_tokens=10_000)
    store.publish_budgets("acme", [budget])
    now_ms = int(time.time() * 1000)
    bucket = bucket_for(budget.period, budget.tz, now_ms).start_ms
    key = store.keys.spent("acme", "day", "tenant=acme")
    # What the earlier layout left: a running state, an open reservation and a degraded budget's zero record.
    store.client.hset(
        key,
        mapping={
            str(bucket): 4000,
            "_s": 4000,
            "_w": bucket,
            "_o": 3000,
            "_n": now_ms + 60_000,
            "_x": now_ms + 86_400_000,
            f"r{now_ms + 60_000}:old": 3000,
            f"r{now_ms + 60_000}:deg": 0,
        },
    )
    guard = BudgetGuard(store, decision_cache_s=0.0)
    assert not guard.reserve({"tenant": "acme"}, prompt_tokens=2000, max_tokens=1500, **GPT).allowed  # 7000 + 3500
    r = guard.reserve({"tenant": "acme"}, prompt_tokens=2000, max_tokens=1000, **GPT)
    assert r.allowed  # exactly the limit
    fields = {f.decode(): v.decode() for f, v in store.client.hgetall(key).items()}
    state = fields["_k"]
    assert sorted(f for f in fields if f.startswith("_")) == sorted(["_k", state])  # _s _w _o _n _x are gone
    assert int(fields[state]) == 0 and f"z{now_ms + 60_000}:deg" in fields
    assert store.client.pttl(key) > 86_400_000


def test_a_caller_whose_clock_is_behind_keeps_the_newer_window(store: RedisBudgetStore) -> None:
    store.publish_budgets("acme", [Budget.from_cli("m", scope="tenant=acme", period="rolling-1h", limit_tokens=10**6)])
    t = (int(time.time()) // 60 + 1) * 60 + 1.0  # one second into a minute bucket
    ahead = BudgetGuard(store, decision_cache_s=0.0, clock=lambda: t)
    behind = BudgetGuard(store, decision_cache_s=0.0, clock=lambda: t - 2)  # still in the previous bucket
    ahead.reserve({"tenant": "acme"}, prompt_tokens=10, max_tokens=10, **GPT).settle({"input_tokens": 5})
    late = behind.reserve({"tenant": "acme"}, prompt_tokens=10, max_tokens=10, **GPT)
    assert late.allowed
    fields = store.client.hgetall(store.keys.spent("acme", "m", "tenant=acme"))
    state = fields[b"_k"]
    assert state.startswith(b"_%d:" % ((int(t) // 60 + 1) * 60_000 - 3_600_000))  # the newer window
    assert sorted(f for f in fields if f.startswith(b"_")) == sorted([b"_k", state])
    assert int(fields[state]) == 5 + 20 - 10**6  # settled 5, 20 reserved
    late.settle({"input_tokens": 7})
    fields = store.client.hgetall(store.keys.spent("acme", "m", "tenant=acme"))
    assert int(fields[state]) == 12 - 10**6 and sum(int(v) for f, v in fields.items() if f.isdigit()) == 12


def test_a_redis_that_lost_its_scripts_still_reserves_settles_and_refuses(store: RedisBudgetStore) -> None:
    """``SCRIPT FLUSH`` (what a restart does): a NOSCRIPT reply makes the guard load its script and send it again."""
    store.publish_budgets("acme", [Budget.from_cli("day", scope="tenant=acme", limit_tokens=100)])
    guard = BudgetGuard(store, decision_cache_s=0.0)
    scope = {"tenant": "acme"}
    counter = store.keys.spent("acme", "day", "tenant=acme")
    store.client.script_flush()
    held = guard.reserve(scope, prompt_tokens=30, max_tokens=30, **GPT)
    assert held.allowed and held.request is not None
    assert [f for f in store.client.hkeys(counter) if f.startswith(b"r")]  # the record is in Redis
    store.client.script_flush()
    held.settle({"input_tokens": 30, "output_tokens": 10})
    refused = guard.reserve(scope, prompt_tokens=30, max_tokens=40, **GPT)  # 40 spent + 70 > 100
    assert not refused.allowed and refused.answer.held == 40 and refused.answer.limit == 100
    assert not [f for f in store.client.hkeys(counter) if f.startswith(b"r")]
    store.client.script_flush()
    fits = guard.reserve(scope, prompt_tokens=30, max_tokens=20, **GPT)
    fits.settle({"input_tokens": 30, "output_tokens": 20})
    assert not [f for f in store.client.hkeys(counter) if f.startswith(b"r")]
    assert sum(int(v) for f, v in store.client.hgetall(counter).items() if f.isdigit()) == 90
