"""Spend windows and budget evaluation: exact counts, redelivery-safe, edge-triggered, lifts on raise/rollover."""

from __future__ import annotations

import json
import uuid

from costplane.budgets import Budget
from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.core.spend import state_key
from costplane.streams.worker.spend import Located, Outcome, State, apply_batch, reevaluate, touched_keys

DAY0 = 1_795_392_000_000  # a UTC midnight
NOW = DAY0 + 3_600_000


def located(user: str, tokens: int, offset: int, *, nanos: int = 1000, partition: int = 0, at: int = NOW,
            tenant: str = "acme") -> Located:
    ev = UsageEvent(event_id=str(uuid.uuid4()), occurred_at=at, tenant=tenant, provider="openai", model="m",
                    request_id=str(uuid.uuid4()), attempt=1, status="ok", input_tokens=tokens, user_id=user)
    return Located(PricedEvent(ev, nanos, "v1"), partition, offset)


def budget(limit: int = 1000, **kw: object) -> Budget:
    fields: dict[str, object] = {"id": "b", "scope": {"tenant": "acme", "user": "*"}, "unit": "tokens",
                                 "limit": limit, "soft": (0.5,), "version": 1}
    fields.update(kw)
    return Budget(**fields)  # type: ignore[arg-type]


def run(items: list[Located], budgets: list[Budget], states: dict[str, State], now: int = NOW) -> Outcome:
    keys = touched_keys(items, budgets)
    out = apply_batch(items, budgets, {k: states.get(k) for k in keys}, now)
    states.update(out.states)
    return out


def test_counts_per_member_and_crosses_once() -> None:
    states: dict[str, State] = {}
    b = budget()
    out = run([located("u1", 300, 0), located("u1", 300, 1), located("u2", 100, 2)], [b], states)
    assert [n["member"] for n in out.notifications] == ["tenant=acme,user=u1"]  # 600 ≥ 0.5 × 1000
    assert out.decisions == []
    out = run([located("u1", 500, 3)], [b], states)
    assert [d["spent"] for d in out.decisions] == [1100] and out.decisions[0]["action"] == "block"
    assert out.decisions[0]["window_end_ms"] == DAY0 + 86_400_000
    assert out.notifications == []  # the soft threshold fired once this window
    out = run([located("u1", 1, 4)], [b], states)
    assert out.decisions == []  # still over: no second decision
    json.dumps(states)  # table values are plain JSON


def test_redelivered_offsets_do_not_double_count() -> None:
    states: dict[str, State] = {}
    b = budget(limit=10_000)
    batch = [located("u1", 100, 10), located("u1", 200, 11)]
    run(batch, [b], states)
    out = run(batch + [located("u1", 50, 12)], [b], states)  # crash before commit: the batch comes again
    assert out.skipped_redelivered == 2
    key = state_key("b", "tenant=acme,user=u1")
    assert sum(cell[0] for cell in states[key]["b"].values()) == 350
    assert [c.amount for c in out.counters] == [350]


def test_usd_budget_sums_integer_nanos() -> None:
    states: dict[str, State] = {}
    b = budget(limit=2_500, unit="usd")
    out = run([located("u1", 1, i, nanos=1_000) for i in range(3)], [b], states)
    assert out.decisions[0]["spent"] == 3_000 and out.decisions[0]["unit"] == "usd"


def test_raising_the_budget_lifts_and_lowering_decides() -> None:
    states: dict[str, State] = {}
    run([located("u1", 1500, 0)], [budget()], states)
    key = state_key("b", "tenant=acme,user=u1")
    out = Outcome()
    reevaluate(budget(limit=5000, version=2), key, dict(states[key]), NOW, out)
    assert [x["reason"] for x in out.lifts] == ["budget raised"] and out.decisions == []
    states.update(out.states)
    out = Outcome()
    reevaluate(budget(limit=1000, version=3), key, dict(states[key]), NOW, out)
    assert len(out.decisions) == 1 and out.lifts == []


def test_window_rollover_clears_the_decision_and_rearms_thresholds() -> None:
    states: dict[str, State] = {}
    b = budget()
    run([located("u1", 1500, 0)], [b], states)
    key = state_key("b", "tenant=acme,user=u1")
    out = Outcome()
    reevaluate(b, key, dict(states[key]), DAY0 + 86_400_000 + 1, out)
    assert out.states[key]["d"] is None and out.decisions == []
    states.update(out.states)
    out = run([located("u1", 600, 1, at=DAY0 + 86_400_000 + 5)], [b], states, now=DAY0 + 86_400_000 + 10)
    assert len(out.notifications) == 1 and out.notifications[0]["spent"] == 600


def test_deleted_budget_lifts() -> None:
    states: dict[str, State] = {}
    run([located("u1", 1500, 0)], [budget()], states)
    key = state_key("b", "tenant=acme,user=u1")
    out = Outcome()
    reevaluate(None, key, dict(states[key]), NOW, out)
    assert [x["reason"] for x in out.lifts] == ["budget deleted"]


def test_rolling_hour_uses_buckets_inside_the_window_only() -> None:
    states: dict[str, State] = {}
    b = budget(limit=1000, period="rolling-1h")
    run([located("u1", 900, 0, at=NOW - 3_700_000)], [b], states)  # older than an hour
    out = run([located("u1", 200, 1)], [b], states)
    assert out.decisions == []
    key = state_key("b", "tenant=acme,user=u1")
    assert len(states[key]["b"]) == 1  # the old bucket was pruned


def test_events_outside_every_scope_touch_nothing() -> None:
    out = run([located("u1", 5000, 0, tenant="other")], [budget()], {})
    assert out.states == {} and out.counted == 0
