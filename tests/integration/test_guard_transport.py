"""The guard's connections (redis-py's pool): a settle is applied when it returns, a refused script leaves the
connection usable, a killed connection is replaced, and a forked child never shares its parent's socket."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from costplane.budgets import Budget
from costplane.config import RedisSettings
from costplane.enforcers import BudgetGuard, RedisBudgetStore
from costplane.enforcers.keys import KeyLayout

pytestmark = pytest.mark.redis
GPT = {"provider": "openai", "model": "gpt-4o-mini"}
SCOPE = {"tenant": "acme"}


@pytest.fixture
def store(redis_settings: RedisSettings) -> Iterator[RedisBudgetStore]:
    client = redis.Redis.from_url(redis_settings.url.get_secret_value(), socket_timeout=1.0)
    store = RedisBudgetStore(client, KeyLayout(redis_settings.key_prefix))
    store.publish_budgets("acme", [Budget.from_cli("day", scope="tenant=acme", limit_tokens=1000)])
    yield store
    for key in client.scan_iter(f"{redis_settings.key_prefix}:*", count=10_000):
        client.delete(key)
    client.close()


def _spent(store: RedisBudgetStore) -> int:
    counter = store.client.hgetall(store.keys.spent("acme", "day", "tenant=acme"))
    return sum(int(v) for f, v in counter.items() if f.isdigit())


def test_a_settle_is_applied_when_it_returns(store: RedisBudgetStore) -> None:
    guard = BudgetGuard(store, decision_cache_s=0.0)
    for _ in range(10):
        guard.reserve(SCOPE, prompt_tokens=50, max_tokens=50, **GPT).settle({"input_tokens": 50, "output_tokens": 7})
    assert _spent(store) == 10 * 57  # read through another connection, with no flush in between


def test_a_refused_script_keeps_the_connection_in_step(store: RedisBudgetStore) -> None:
    guard = BudgetGuard(store, decision_cache_s=0.0)
    counter = store.keys.spent("acme", "day", "tenant=acme")
    store.client.set(counter, "not a hash")  # the script's HINCRBY is refused: an error reply for this scope
    refused = guard.reserve(SCOPE, prompt_tokens=10, max_tokens=10, **GPT)
    assert refused.answer.reason == "enforcement_unavailable" and not guard.core.breaker.open
    store.client.delete(counter)
    r = guard.reserve(SCOPE, prompt_tokens=10, max_tokens=10, **GPT)
    assert r.allowed and r.answer.reason == ""  # the next reply is this call's, not a late one
    r.settle({"input_tokens": 10, "output_tokens": 3})
    assert _spent(store) == 13


def test_a_killed_connection_is_replaced_without_failing_a_call(
    store: RedisBudgetStore, redis_settings: RedisSettings
) -> None:
    """redis-py's pool sees the closed socket when it hands the connection out, and connects again."""
    guard = BudgetGuard(store, decision_cache_s=0.0)
    assert guard.reserve(SCOPE, prompt_tokens=1, max_tokens=1, **GPT).allowed
    own_id = store.client.client_id()
    other = redis.Redis.from_url(redis_settings.url.get_secret_value())
    assert other.client_kill_filter(_id=own_id) == 1
    other.close()
    served = guard.reserve(SCOPE, prompt_tokens=1, max_tokens=1, **GPT)
    assert served.allowed and served.answer.reason == ""
    assert guard.metrics.fail_open._value.get() == 0 and not guard.core.breaker.open
    assert store.client.client_id() != own_id


def test_a_forked_child_opens_its_own_connection(store: RedisBudgetStore) -> None:
    guard = BudgetGuard(store, decision_cache_s=0.0)
    guard.reserve(SCOPE, prompt_tokens=1, max_tokens=1, **GPT).release()
    parent_id = store.client.client_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            r = guard.reserve(SCOPE, prompt_tokens=100, max_tokens=100, **GPT)
            r.settle({"input_tokens": 100, "output_tokens": 11})
            os.write(write, b"%d" % store.client.client_id())
        finally:
            os._exit(0)  # a forked test child must not run the parent's exit handlers
    os.close(write)
    with os.fdopen(read, "rb") as inp:
        child_id = int(inp.read() or b"0")
    os.waitpid(pid, 0)
    assert child_id and child_id != parent_id
    assert store.client.client_id() == parent_id  # the parent's connection was left alone
    assert _spent(store) == 111
