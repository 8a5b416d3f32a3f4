"""The worker's window store on real Redis: the commit script fences, writes atomically and matches the
in-memory backend the unit tests use."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
import redis

from costplane.budgets import Budget
from costplane.config import RedisSettings
from costplane.enforcers.keys import KeyLayout
from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.worker.windows import Located, WorkerWindows
from costplane.streams.worker.windowstore import (
    MemoryWindowBackend,
    RedisWindowBackend,
    TenantCommit,
    WindowBackend,
    WindowKeys,
)

pytestmark = [pytest.mark.redis]

DAY0 = 1_795_392_000_000
NOW = DAY0 + 3_600_000


def located(user: str, tokens: int, offset: int, partition: int = 0) -> Located:
    ev = UsageEvent(
        event_id=str(uuid.uuid4()),
        occurred_at=NOW,
        tenant="acme",
        provider="openai",
        model="m",
        request_id=str(uuid.uuid4()),
        attempt=1,
        status="ok",
        input_tokens=tokens,
        user_id=user,
    )
    return Located(PricedEvent(ev, 10 * tokens, "v1"), partition, offset)


BUDGET = Budget(id="b", scope={"tenant": "acme", "user": "*"}, unit="tokens", limit=1000, soft=(0.5,), version=1)


@pytest.fixture
def client(redis_settings: RedisSettings) -> redis.Redis:
    return redis.Redis.from_url(redis_settings.url.get_secret_value())


def scenario(backend: WindowBackend, keys: WindowKeys, layout: KeyLayout) -> list[tuple[str, int]]:
    """Counts, a crossing, a redelivery, a zombie commit and a lift; returns what happened, in order."""
    happened: list[tuple[str, int]] = []
    first, second = (WorkerWindows(backend, keys, layout) for _ in range(2))
    for w, batch in (
        (first, [located("u1", 600, 0), located("u2", 10, 1)]),
        (first, [located("u1", 600, 1), located("u1", 500, 2)]),
    ):  # offset 1 comes again
        pending = w.count(batch, [BUDGET], NOW)
        happened += [(d.type, d.spent) for d in pending.decisions] + [("redelivered", pending.redelivered)]
        assert w.commit(pending).fenced == []
    stale = first.count([located("u1", 1, 3)], [BUDGET], NOW)
    pending = second.count([located("u1", 1, 3), located("u1", 1, 4)], [BUDGET], NOW)
    second.commit(pending)
    happened.append(("fenced", len(first.commit(stale).fenced)))
    lifted = second.reevaluate({"b": BUDGET.model_copy(update={"limit": 5000, "version": 2})}, {"b"}, NOW + 1)
    second.commit(lifted)
    happened += [(d.type, d.spent) for d in lifted.decisions]
    return happened


def test_redis_backend_behaves_like_the_memory_backend(client: redis.Redis, redis_settings: RedisSettings) -> None:
    prefix = redis_settings.key_prefix
    keys, layout = WindowKeys(prefix, "g"), KeyLayout(prefix)
    on_redis = scenario(RedisWindowBackend(client, keys), keys, layout)
    memory = MemoryWindowBackend()
    in_memory = scenario(memory, memory.keys, KeyLayout("mem"))
    assert (
        on_redis
        == in_memory
        == [
            ("threshold", 600),
            ("redelivered", 0),
            ("decision", 1100),
            ("redelivered", 1),
            ("fenced", 1),
            ("lift", 1102),
        ]
    )
    assert client.hgetall(f"{prefix}:{{acme}}:worker:g") == {b"o:0": b"4"}
    assert client.hgetall(layout.spent("acme", "b", "tenant=acme,user=u1")) == {str(DAY0).encode(): b"1102"}
    assert client.get(layout.decision("acme", "b", "tenant=acme,user=u1")) is None
    state = json.loads(client.get(keys.window("b|tenant=acme,user=u1")) or b"null")
    assert state["b"] == {str(DAY0): [1102, 11020]} and state["d"] is None
    assert 0 < client.pttl(keys.window("b|tenant=acme,user=u1")) <= 2 * 86_400_000


def test_a_refused_fence_writes_nothing(client: redis.Redis, redis_settings: RedisSettings) -> None:
    keys = WindowKeys(redis_settings.key_prefix, "g")
    backend = RedisWindowBackend(client, keys)
    ok = TenantCommit("acme", keys.meta("acme"), fence=(3, -1, 10))
    ok.set(f"{redis_settings.key_prefix}:{{acme}}:probe", "first", 60_000)
    late = TenantCommit("acme", keys.meta("acme"), fence=(3, -1, 12))  # expects no fence: another worker moved it
    late.set(f"{redis_settings.key_prefix}:{{acme}}:probe", "second", 60_000)
    assert backend.commit([ok, late]) == [None, 10]
    assert client.get(f"{redis_settings.key_prefix}:{{acme}}:probe") == b"first"
    assert backend.load_meta(["acme"])["acme"].fences == {3: 10}


def test_a_window_commit_keeps_the_guards_running_total_in_step(
    client: redis.Redis, redis_settings: RedisSettings
) -> None:
    """The guard keeps its state (spent + open - limit, in the field ``_k`` names) beside the buckets; the worker's
    commit sets a bucket with the guard's own ``set_counter``, so the state moves with it."""
    prefix = redis_settings.key_prefix
    keys, layout = WindowKeys(prefix, "g"), KeyLayout(prefix)
    spent_key = layout.spent("acme", "b", "tenant=acme,user=u1")
    state = f"_{DAY0}:{DAY0 + 2 * 86_400_000 + 60_000}:1000"
    client.hset(spent_key, mapping={str(DAY0): 40, "_k": state, state: 40 - 1000})  # a guard settled 40 tokens
    w = WorkerWindows(RedisWindowBackend(client, keys), keys, layout)
    w.commit(w.count([located("u1", 600, 0)], [BUDGET], NOW))
    counter = client.hgetall(spent_key)
    assert counter[str(DAY0).encode()] == b"600" and counter[state.encode()] == b"-400"  # the stream's total wins
    assert client.pttl(spent_key) > 0


def tenant_event(tenant: str, user: str, tokens: int, offset: int, partition: int) -> Located:
    ev = UsageEvent(
        event_id=str(uuid.uuid4()),
        occurred_at=NOW,
        tenant=tenant,
        provider="openai",
        model="m",
        request_id=str(uuid.uuid4()),
        attempt=1,
        status="ok",
        input_tokens=tokens,
        user_id=user,
    )
    return Located(PricedEvent(ev, 10 * tokens, "v1"), partition, offset)


PER_USER = Budget(id="pu", scope={"tenant": "*", "user": "*"}, unit="tokens", limit=1000, version=1)


def three_tenant_batch() -> list[Located]:
    """Tenants a and b stay under the limit; tenant c's user crosses it (a decision record)."""
    return [
        tenant_event("a", "u1", 100, 0, 0),
        tenant_event("b", "u1", 200, 0, 1),
        tenant_event("a", "u2", 50, 1, 0),
        tenant_event("c", "u9", 1500, 0, 2),
    ]


def window_contents(client: redis.Redis, prefix: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for raw in client.scan_iter(f"{prefix}:*", count=1000):
        key = raw.decode()[len(prefix) :]
        kind = client.type(raw)
        out[key] = (
            client.hgetall(raw)
            if kind == b"hash"
            else client.smembers(raw)
            if kind == b"set"
            else json.loads(client.get(raw) or b"null")
        )
    return out


def test_early_sent_commits_run_before_commit_and_write_what_the_plain_path_writes(client: redis.Redis) -> None:
    plain_prefix, early_prefix = f"p{uuid.uuid4().hex[:8]}", f"e{uuid.uuid4().hex[:8]}"
    results = {}
    for prefix, early in ((plain_prefix, False), (early_prefix, True)):
        keys, layout = WindowKeys(prefix, "g"), KeyLayout(prefix)
        w = WorkerWindows(RedisWindowBackend(client, keys), keys, layout)
        pending = w.count(three_tenant_batch(), [PER_USER], NOW, send_early=early)

        # Before commit(): early, the decision-free tenants' scripts have run; the crossing tenant's waits (its
        # record is published first); plain, nothing is written yet.
        def fences(keys: WindowKeys = keys) -> dict[str, bytes | None]:
            return {t: client.hget(keys.meta(t), f"o:{p}") for t, p in (("a", 0), ("b", 1), ("c", 2))}

        expected = {"a": b"1", "b": b"0", "c": None} if early else dict.fromkeys("abc")
        assert _eventually(lambda expected=expected, fences=fences: fences() == expected), fences()
        assert [d.tenant for d in pending.decisions] == ["c"]
        assert w.commit(pending).fenced == []
        results[early] = window_contents(client, prefix)
    assert results[True] == results[False]
    assert results[True][":{c}:spent:pu:tenant=c,user=u9"] == {str(DAY0).encode(): b"1500"}
    assert results[True][":worker:g:tenants"] == {b"a", b"b", b"c"}


def test_a_broken_early_stream_is_committed_again_and_counts_once(client: redis.Redis) -> None:
    """The early scripts went through but their replies were lost: the retry recognises each commit's own fence."""
    prefix = f"x{uuid.uuid4().hex[:8]}"
    keys, layout = WindowKeys(prefix, "g"), KeyLayout(prefix)
    w = WorkerWindows(RedisWindowBackend(client, keys), keys, layout)
    pending = w.count(three_tenant_batch()[:3], [PER_USER], NOW, send_early=True)
    assert _eventually(lambda: client.hget(keys.meta("b"), "o:1") == b"0")
    assert pending.stream is not None
    pending.stream.abort()  # as if the connection dropped before the replies were read
    with pytest.raises(redis.ConnectionError):
        w.commit(pending)
    assert w.commit(pending).fenced == []  # the plain retry
    assert client.hgetall(layout.spent("a", "pu", "tenant=a,user=u1")) == {str(DAY0).encode(): b"100"}
    assert client.hgetall(layout.spent("b", "pu", "tenant=b,user=u1")) == {str(DAY0).encode(): b"200"}
    again = w.count([tenant_event("a", "u1", 7, 2, 0)], [PER_USER], NOW, send_early=True)
    assert w.commit(again).fenced == []
    assert client.hgetall(layout.spent("a", "pu", "tenant=a,user=u1")) == {str(DAY0).encode(): b"107"}


def _eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
