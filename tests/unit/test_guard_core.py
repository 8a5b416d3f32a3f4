"""The guard without a network: failure policy, breaker, local cache, settle semantics, publisher hand-off, script
arguments."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from costplane.budgets import Budget
from costplane.enforcers import AsyncBudgetGuard, BudgetGuard, CircuitBreaker, FailurePolicy, InMemoryBudgetStore
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.plan import ReserveRequest, build_plan, matching
from costplane.enforcers.store import reserve_args, settle_args

T0 = 1_790_000_000.0
CALL = {"provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 100, "max_tokens": 100}


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class Spy:
    """Wraps a store: counts calls per method and can be switched to fail like a dead Redis."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.keys = inner.keys
        self.calls: dict[str, int] = {}
        self.failing = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)

        def call(*args: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.failing:
                raise redis.ConnectionError("connection refused")
            return target(*args)

        return call


def _setup(**kw: Any) -> tuple[BudgetGuard, Spy, Clock]:
    clock = Clock()
    store = InMemoryBudgetStore(KeyLayout("t"), clock=lambda: int(clock() * 1000))
    store.publish_budgets("acme", [Budget.from_cli("tok", scope="tenant=acme,user=*", limit_tokens=1000)])
    spy = Spy(store)
    kw.setdefault("registry", CollectorRegistry())
    return BudgetGuard(spy, clock=clock, **kw), spy, clock


def _count(guard: BudgetGuard, name: str) -> float:
    value = guard.metrics.registry.get_sample_value(name)
    return float(value or 0.0)


def test_dead_store_fails_open_or_closed_per_scope_counted_never_raising() -> None:
    policy = FailurePolicy(default="open", rules=[({"plan": "free"}, "closed")])
    guard, spy, _clock = _setup(policy=policy, breaker=CircuitBreaker(threshold=1000))
    spy.failing = True
    pro = guard.reserve({"tenant": "acme", "user": "u1", "plan": "pro"}, **CALL)
    free = guard.reserve({"tenant": "acme", "user": "u2", "plan": "free"}, **CALL)
    assert pro.allowed and pro.answer.reason == "enforcement_unavailable" and pro.request is None
    assert not free.allowed and free.answer.reason == "enforcement_unavailable" and free.answer.retry_after_s > 0
    assert guard.check({"tenant": "acme", "user": "u3", "plan": "free"}).kind == "block"
    pro.settle({"input_tokens": 10, "output_tokens": 10})  # nothing held: settles nothing, raises nothing
    assert _count(guard, "costplane_guard_fail_open_total") == 1
    assert _count(guard, "costplane_guard_fail_closed_total") == 2


def test_breaker_stops_touching_a_dead_store_and_recovers_by_itself() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=2.0, clock=clock)
    guard, spy, _ = _setup(breaker=breaker, budget_cache_s=60)
    scope = {"tenant": "acme", "user": "u1"}
    assert guard.reserve(scope, **CALL).answer.reason == ""  # budgets now cached; one store op per call
    spy.failing = True
    before = spy.calls.get("reserve", 0)
    answers = [guard.reserve(scope, **CALL).answer for _ in range(50)]
    assert all(a.allowed and a.reason == "enforcement_unavailable" for a in answers)
    assert spy.calls["reserve"] - before == 3  # then the circuit is open: no more I/O
    spy.failing = False
    clock.t += 2.0
    assert guard.reserve(scope, **CALL).answer.reason == ""  # the probe succeeded: enforcing again
    assert not breaker.open


def test_a_block_is_answered_from_memory_until_the_cache_expires() -> None:
    guard, spy, clock = _setup(decision_cache_s=1.0)
    end_ms = int(T0 * 1000) + 3_600_000
    spy.inner.write_decision(
        "acme",
        "tok",
        "tenant=acme,user=u1",
        json.dumps({"action": "block", "budget_id": "tok", "reason": "limit", "window_end_ms": end_ms}),
        end_ms,
    )
    scope = {"tenant": "acme", "user": "u1"}
    assert guard.check(scope).kind == "block"
    io = sum(spy.calls.values())
    assert all(guard.reserve(scope, **CALL).answer.kind == "block" for _ in range(20))
    assert guard.check(scope).retry_after_s == pytest.approx(3600)
    assert sum(spy.calls.values()) == io  # served from memory
    assert _count(guard, "costplane_guard_cache_hits_total") == 21
    spy.inner.clear_decision("acme", "tok", "tenant=acme,user=u1")
    clock.t += 1.0
    assert guard.check(scope).kind == "allow"


def test_settle_and_release_are_idempotent_and_the_block_releases_on_exit() -> None:
    guard, spy, _ = _setup()
    scope = {"tenant": "acme", "user": "u1"}
    with guard.reserve(scope, **CALL) as r:  # 200 tokens held
        assert r.allowed
        r.settle({"input_tokens": 100, "output_tokens": 20})
        r.settle({"input_tokens": 100, "output_tokens": 20})
        r.release()
    assert spy.calls["settle"] == 1
    with (
        pytest.raises(RuntimeError),
        guard.reserve(scope, prompt_tokens=400, max_tokens=400, provider="openai", model="gpt-4o-mini") as r2,
    ):
        assert r2.allowed  # 120 settled + 800 held ≤ 1000
        raise RuntimeError("the model call failed")
    # The failed call's 800 were released on exit: 880 tokens fit beside the 120 settled.
    assert guard.reserve(scope, prompt_tokens=480, max_tokens=400, provider="openai", model="gpt-4o-mini").allowed


def test_settle_hands_the_usage_to_a_publisher() -> None:
    guard, _spy, _ = _setup()
    seen: list[dict[str, Any]] = []

    class Publisher:
        def record(self, **fields: Any) -> bool:
            seen.append(fields)
            return True

    scope = {"tenant": "acme", "user": "u1", "feature": "search"}
    r = guard.reserve(scope, **CALL)
    usage = {"prompt_tokens": 90, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 40}}
    r.settle(usage, publisher=Publisher(), latency_ms=120)
    assert seen == [
        {
            "tenant": "acme",
            "feature": "search",
            "user_id": "u1",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 50,
            "cached_input_tokens": 40,
            "cache_write_tokens": 0,
            "output_tokens": 30,
            "reasoning_tokens": 0,
            "latency_ms": 120,
        }
    ]


def test_settle_is_skipped_while_the_circuit_is_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=5.0, clock=clock)
    guard, spy, _ = _setup(breaker=breaker)
    r = guard.reserve({"tenant": "acme", "user": "u1"}, **CALL)
    breaker.failure()
    r.settle({"input_tokens": 10})
    assert "settle" not in spy.calls and r.settled  # no timeout paid; the reservation expires by its TTL


def test_async_guard_runs_on_the_in_memory_store() -> None:
    clock = Clock()
    store = InMemoryBudgetStore(KeyLayout("t"), clock=lambda: int(clock() * 1000))
    store.publish_budgets("acme", [Budget.from_cli("tok", scope="tenant=acme", limit_tokens=300)])
    guard = AsyncBudgetGuard(store, clock=clock, registry=CollectorRegistry())

    async def scenario() -> list[str]:
        async with await guard.reserve({"tenant": "acme"}, **CALL) as r:
            await r.asettle({"input_tokens": 100, "output_tokens": 100})
        second = await guard.reserve({"tenant": "acme"}, **CALL)
        return [r.answer.kind, second.answer.kind]

    assert asyncio.run(scenario()) == ["allow", "block"]


def test_plans_follow_the_bucket_and_the_budget_list() -> None:
    guard, spy, clock = _setup(budget_cache_s=0.0)
    spy.inner.publish_budgets(
        "acme", [Budget.from_cli("m", scope="tenant=acme", period="rolling-1m", limit_tokens=10**6)]
    )
    scope = {"tenant": "acme"}
    first = guard.reserve(scope, **CALL).request
    same = guard.reserve(scope, **CALL).request
    assert first is not None and same is not None and first.plan is not None
    clock.t += 5.0  # next 5-second bucket of the rolling minute
    later = guard.reserve(scope, **CALL).request
    assert later is not None
    assert later.slots[0].bucket_start_ms == first.slots[0].bucket_start_ms + 5000
    assert first.reservation_id != same.reservation_id


def test_script_keys_and_arguments_follow_the_scripts_layout() -> None:
    """KEYS and ARGV of reserve.lua and settle.lua, built from a plan whose fixed part is computed once."""
    keys = KeyLayout("cp")
    budgets = [
        Budget.from_cli("day", scope="tenant=acme", limit_usd="5"),
        Budget.from_cli(
            "hour", scope="tenant=acme,user=*", period="rolling-1h", limit_tokens=9000, action="degrade:gpt-4o-mini"
        ),
        Budget.from_cli("note", scope="tenant=acme", limit_usd="1", action="notify"),
    ]
    scope = {"tenant": "acme", "user": "u1"}
    now = int(T0 * 1000)
    plan = build_plan(keys, "acme", matching(budgets, scope), now)
    assert [s.budget.id for s in plan.slots] == ["day", "hour"] and len(plan.decision_keys) == 3
    assert all("{acme}" in k for k in plan.decision_keys)
    req = ReserveRequest("rid1", now, now + 300_000, plan, 1234, 56)
    assert req.amounts == (1234, 56)  # the USD day budget takes the nano-USD, the token budget the tokens
    day, hour = plan.slots
    field = f"r{now + 300_000}:rid1"
    rkeys, rargs = reserve_args(req)
    assert list(rkeys) == [*plan.decision_keys, day.counter_key, hour.counter_key]
    # field, now, nanos, tokens | per budget: code (u: block on nano-USD, T: degrade on tokens), state field
    assert rargs == [field, now, 1234, 56, "u", day.state_field, "T", hour.state_field]
    skeys, sargs = settle_args(req, 10, 20, now + 5)
    assert list(skeys) == [day.counter_key, hour.counter_key]
    # field, now, actual nanos, actual tokens, their moves | per budget: unit code, state field, bucket start
    assert sargs == [
        field,
        now + 5,
        10,
        20,
        10 - 1234,
        20 - 56,
        *("u", day.state_field, day.bucket_start_ms),
        *("t", hour.state_field, hour.bucket_start_ms),
    ]


def test_an_unreadable_budget_is_skipped_not_raised() -> None:
    from costplane.enforcers.store import parse_budgets

    good = Budget.from_cli("tok", scope="tenant=acme", limit_tokens=10)
    assert parse_budgets("acme", {b"tok": good.to_json().encode(), b"bad": b"{not json", b"x": b'{"id": 1}'}) == [good]


def test_settle_builds_a_usage_event_for_an_emit_only_publisher() -> None:
    from costplane.publisher.event import UsageEvent

    guard, _spy, _ = _setup()
    events: list[UsageEvent] = []

    class Sink:
        def emit(self, event: UsageEvent) -> bool:
            events.append(event)
            return True

    r = guard.reserve({"tenant": "acme", "user": "u1"}, **CALL)
    r.settle({"input_tokens": 70, "output_tokens": 9}, publisher=Sink())
    (event,) = events
    assert (event.tenant, event.user_id, event.model, event.input_tokens, event.output_tokens) == (
        "acme",
        "u1",
        "gpt-4o-mini",
        70,
        9,
    )
    assert event.occurred_at == int(T0 * 1000) and event.request_id == event.event_id and event.attempt == 1


def test_plan_cache_stays_bounded() -> None:
    from costplane.enforcers.plan import PlanCache

    keys = KeyLayout("t")
    cache = PlanCache(keys, max_entries=8)
    budgets = [Budget.from_cli("u", scope="tenant=acme,user=*", limit_tokens=10)]
    for i in range(50):
        scope = {"tenant": "acme", "user": f"u{i}"}
        plan = cache.plan((("tenant", "acme"), ("user", f"u{i}")), "acme", scope, budgets, int(T0 * 1000))
        assert plan.slots[0].member == f"tenant=acme,user=u{i}"
        assert len(cache._entries) <= 8
