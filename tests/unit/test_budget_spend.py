"""Spend windows and decisions per (budget, member), table-driven over an injected clock: limits, lifts on raise and
rollover, soft thresholds exactly once per window, budget changes mid-window, rolling expiry, JSON state."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from costplane.budgets import Budget
from costplane.budgets.windows import WindowCache, window_for
from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.core.spend import Decision, State, aggregate, apply_increments, evaluate

_ids = itertools.count()


def apply_batch(
    events: Iterable[PricedEvent], budgets: list[Budget], states: Mapping[str, State | None], now_ms: int
) -> tuple[dict[str, State], list[Decision]]:
    """Count a batch and evaluate each touched key once: what the worker does per batch, in one call."""
    windows = WindowCache()
    return apply_increments(aggregate(events, budgets, windows), budgets, states, now_ms, windows)


def total(state: State | None, budget: Budget, now_ms: int) -> int:
    """The member's spend in the window containing ``now_ms``, in the budget's unit, summed from the buckets."""
    if not state:
        return 0
    w = window_for(budget.period, budget.tz, now_ms)
    column = 0 if budget.unit == "tokens" else 1
    return sum(int(v[column]) for s, v in state["b"].items() if w.start_ms <= int(s) < w.end_ms)


def at(text: str, tz: str = "UTC") -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def ev(when: int, cost: int = 0, tokens: int = 0, user: str = "u1", tenant: str = "acme") -> PricedEvent:
    e = UsageEvent(
        event_id=f"e{next(_ids)}",
        occurred_at=when,
        tenant=tenant,
        provider="openai",
        model="gpt-4o",
        request_id="r",
        attempt=1,
        status="ok",
        input_tokens=tokens,
        user_id=user,
        plan="free",
    )
    return PricedEvent(e, cost, "test")


class Run:
    """The worker in miniature: a table of states, one apply_batch per batch, decisions collected."""

    def __init__(self, *budgets: Budget) -> None:
        self.budgets = list(budgets)
        self.table: dict[str, State] = {}
        self.log: list[Decision] = []

    def batch(self, now: int, *events: PricedEvent) -> list[Decision]:
        keys = aggregate(events, self.budgets)
        out: list[Decision]
        states, out = apply_batch(events, self.budgets, {k: self.table.get(k) for k in keys}, now)
        restored: dict[str, State] = json.loads(json.dumps(states))  # the table value survives a JSON round trip
        self.table.update(restored)
        self.log += out
        return out

    def tick(self, now: int, budget: Budget | None = None) -> list[Decision]:
        """A timer or a budget change: re-evaluate every key."""
        if budget is not None:
            self.budgets = [budget if b.id == budget.id else b for b in self.budgets]
        out: list[Decision] = []
        for key, state in list(self.table.items()):
            b = next(x for x in self.budgets if key.startswith(x.id + "|"))
            self.table[key], got = evaluate(b, key, state, now)
            out += got
        self.log += out
        return out


def kinds(decisions: list[Decision]) -> list[tuple[str, str]]:
    return [(d.type, d.action if d.type != "threshold" else str(d.threshold)) for d in decisions]


USD = 1_000_000_000


def test_block_at_the_limit_then_lift_when_the_day_rolls_over() -> None:
    daily = Budget.from_cli("acme-day", scope="tenant=acme", limit_usd="10", tz="Europe/Paris", soft="0.5,0.8")
    run = Run(daily)
    t = at("2026-03-29T10:00:00", "Europe/Paris")
    assert kinds(run.batch(t, ev(t, 4 * USD))) == []
    assert kinds(run.batch(t + 1, ev(t, 1 * USD), ev(t, 1 * USD))) == [("threshold", "0.5")]
    assert kinds(run.batch(t + 2, ev(t, 1 * USD))) == []  # 7 $: 50 % already said, 80 % not reached
    out = run.batch(t + 3, ev(t, 3 * USD))
    assert kinds(out) == [("decision", "block"), ("threshold", "0.8")]
    block = out[0]
    assert (block.spent, block.limit, block.unit, block.tenant, block.member) == (
        10 * USD,
        10 * USD,
        "usd",
        "acme",
        "tenant=acme",
    )
    assert block.until_ms == block.window_end_ms == at("2026-03-30T00:00:00", "Europe/Paris")
    assert block.window_end_ms - block.window_start_ms == 23 * 3_600_000  # the spring-forward day
    assert Decision.from_dict(json.loads(block.to_json())) == block
    assert block.dedup_key == f"decision|acme-day|tenant=acme|{block.window_start_ms}"
    assert kinds(run.batch(t + 4, ev(t, USD))) == []  # still blocked: no second decision, no second threshold
    assert kinds(run.tick(block.window_end_ms - 1)) == []
    lift = run.tick(block.window_end_ms)
    assert kinds(lift) == [("lift", "block")] and lift[0].reason == "window rolled over"
    # The new day starts empty and notifies again, once per threshold.
    nxt = block.window_end_ms + 1000
    assert kinds(run.batch(nxt, ev(nxt, 9 * USD))) == [("threshold", "0.5"), ("threshold", "0.8")]


def test_threshold_exactly_at_its_edge_fires_once() -> None:
    b = Budget.from_cli("tok", scope="tenant=acme", limit_tokens=1000, soft="0.5")
    run = Run(b)
    t = at("2026-05-01T12:00:00")
    assert kinds(run.batch(t, ev(t, tokens=499))) == []
    assert kinds(run.batch(t, ev(t, tokens=1))) == [("threshold", "0.5")]  # exactly 500 of 1000
    assert kinds(run.batch(t, ev(t, tokens=499))) == []
    assert kinds(run.batch(t, ev(t, tokens=1))) == [("decision", "block")]  # exactly the limit blocks
    assert [d.type for d in run.log].count("threshold") == 1


def test_raising_the_budget_mid_window_lifts_at_once_and_lowering_blocks_at_once() -> None:
    b = Budget.from_cli("acme-day", scope="tenant=acme", limit_usd="5", action="degrade:gpt-4o-mini", soft="0.8")
    run = Run(b)
    t = at("2026-05-01T12:00:00")
    out = run.batch(t, ev(t, 6 * USD))
    assert kinds(out) == [("decision", "degrade"), ("threshold", "0.8")] and out[0].degrade_model == "gpt-4o-mini"
    raised = b.model_copy(update={"limit": 20 * USD, "version": 2})
    lift = run.tick(t + 10, raised)
    assert kinds(lift) == [("lift", "degrade")] and lift[0].reason == "budget raised" and lift[0].version == 2
    assert kinds(run.tick(t + 20)) == []
    assert kinds(run.batch(t + 30, ev(t + 30, 10 * USD))) == [("threshold", "0.8")]  # 16 of 20: re-armed by the raise
    lowered = raised.model_copy(update={"limit": 15 * USD, "version": 3, "action": "block"})
    out = run.tick(t + 40, lowered)
    assert kinds(out) == [("decision", "block")] and out[0].version == 3 and out[0].spent == 16 * USD
    notify = lowered.model_copy(update={"action": "notify", "version": 4})
    assert kinds(run.tick(t + 50, notify)) == [("lift", "block"), ("notify", "notify")]
    assert kinds(run.tick(t + 60)) == []


def test_deleting_a_budget_lifts_its_decision() -> None:
    b = Budget.from_cli("b", scope="tenant=acme", limit_usd="1")
    run = Run(b)
    t = at("2026-05-01T12:00:00")
    run.batch(t, ev(t, 2 * USD))
    key = "b|tenant=acme"  # the table key: budget id | member
    state, out = evaluate(None, key, run.table[key], t + 1)
    assert kinds(out) == [("lift", "block")] and out[0].reason == "budget deleted" and state["d"] is None


def test_per_member_budgets_keep_members_apart() -> None:
    users = Budget.from_cli("per-user", scope="tenant=acme,user=*", limit_tokens=100)
    run = Run(users)
    t = at("2026-05-01T12:00:00")
    out = run.batch(
        t,
        ev(t, tokens=60, user="a"),
        ev(t, tokens=60, user="a"),
        ev(t, tokens=60, user="b"),
        ev(t, tokens=500, tenant="globex"),
    )
    assert [(d.type, d.member) for d in out] == [("decision", "tenant=acme,user=a")]
    assert set(run.table) == {"per-user|tenant=acme,user=a", "per-user|tenant=acme,user=b"}


def test_rolling_hour_expires_old_buckets_and_lifts_when_spend_ages_out() -> None:
    b = Budget.from_cli("hourly", scope="tenant=acme", period="rolling-1h", limit_tokens=1000)
    run = Run(b)
    t0 = at("2026-05-01T12:00:30")
    run.batch(t0, ev(t0, tokens=600))
    t1 = t0 + 20 * 60_000
    out = run.batch(t1, ev(t1, tokens=500))
    assert kinds(out) == [("decision", "block")]
    # It holds until the 600 tokens of 12:00 leave the window: at 13:00 exactly.
    assert out[0].until_ms == at("2026-05-01T13:00:00")
    assert out[0].ttl_ms(t1) == out[0].until_ms - t1
    assert kinds(run.tick(at("2026-05-01T12:59:59"))) == []
    lift = run.tick(at("2026-05-01T13:00:00"))
    assert kinds(lift) == [("lift", "block")] and lift[0].reason == "spend aged out of the rolling window"
    key = "hourly|tenant=acme"
    assert total(run.table[key], b, at("2026-05-01T13:00:00")) == 500
    assert len(run.table[key]["b"]) == 1  # the expired bucket is gone (memory bounded)
    assert total(run.table[key], b, at("2026-05-01T13:21:00")) == 0


def test_rolling_spend_that_keeps_coming_extends_the_decision_without_a_lift() -> None:
    b = Budget.from_cli("minute", scope="tenant=acme", period="rolling-1m", limit_tokens=100)
    run = Run(b)
    t = at("2026-05-01T12:00:00")
    run.batch(t, ev(t, tokens=100))
    out = run.batch(t + 30_000, ev(t + 30_000, tokens=100))
    assert kinds(out) == [("decision", "block")] and out[0].until_ms == t + 90_000
    assert all(d.type != "lift" for d in run.log)


def test_late_events_of_a_closed_window_do_not_count_in_the_current_one() -> None:
    b = Budget.from_cli("d", scope="tenant=acme", limit_usd="1")
    run = Run(b)
    now = at("2026-05-02T00:10:00")
    assert kinds(run.batch(now, ev(at("2026-05-01T23:59:00"), 5 * USD))) == []
    assert total(run.table["d|tenant=acme"], b, now) == 0


def test_events_ahead_of_the_window_are_kept_but_do_not_count_until_their_window_comes() -> None:
    """A client clock ahead (within the skew bound) can put an event in tomorrow's bucket: it must not block
    today, on the batch path (most keys take its under-the-limit shortcut) nor on a re-evaluation, and it counts
    once its own day begins."""
    b = Budget.from_cli("d", scope="tenant=acme", limit_usd="1")
    run = Run(b)
    now = at("2026-05-01T23:58:00")
    assert kinds(run.batch(now, ev(at("2026-05-02T00:01:00"), 5 * USD), ev(now, USD // 10))) == []
    assert total(run.table["d|tenant=acme"], b, now) == USD // 10
    assert kinds(run.tick(now + 1)) == []
    assert kinds(run.tick(at("2026-05-02T00:02:00"))) == [("decision", "block")]


def test_month_window_in_a_timezone_and_state_is_plain_json() -> None:
    b = Budget.from_cli("m", scope="tenant=acme", period="month", tz="America/New_York", limit_usd="100")
    run = Run(b)
    t = at("2026-01-31T23:30:00", "America/New_York")
    run.batch(t, ev(t, 40 * USD))
    feb = at("2026-02-01T00:30:00", "America/New_York")
    run.batch(feb, ev(feb, 70 * USD))
    state = run.table["m|tenant=acme"]
    assert total(state, b, feb) == 70 * USD and list(state) == ["b", "soft", "d"]
    assert json.loads(json.dumps(state)) == state


def test_plan_preset_budgets_decide_per_user_and_plan() -> None:
    from costplane.budgets import per_user_token_budgets_by_plan

    run = Run(*per_user_token_budgets_by_plan("acme", {"free": 100, "pro": 1000}))
    t = at("2026-05-01T12:00:00")
    out = run.batch(t, ev(t, tokens=150, user="f1"))  # every test event is on the free plan
    assert [(d.budget_id, d.member) for d in out] == [("acme-user-tokens-free", "tenant=acme,user=f1,plan=free")]


def test_random_traffic_and_raises_keep_the_decision_invariants() -> None:
    """Seeded random spend over three days with random raises: a standing block exists exactly when the window's
    spend reaches the limit, lifts only follow decisions, a decision is repeated only for a changed budget, and a
    threshold fires again in a day window only after a raise re-armed it."""
    import random

    rng = random.Random(42)
    b = Budget.from_cli("d", scope="tenant=acme", limit_usd="50", soft="0.5,0.8", tz="Europe/Paris")
    run = Run(b)
    key = "d|tenant=acme"
    now = at("2026-03-28T00:00:00", "Europe/Paris")
    end = now + 3 * 86_400_000
    blocked = False
    blocked_version = -1
    fired: dict[tuple[int, float], int] = {}  # (window, threshold) -> budget version when it fired
    while now < end:
        now += rng.randrange(60_000, 1_800_000)
        if rng.random() < 0.05:
            b = b.model_copy(update={"limit": b.limit + rng.randrange(1, 20) * USD, "version": b.version + 1})
            out = run.tick(now, b)
        elif rng.random() < 0.1:
            out = run.tick(now)
        else:
            out = run.batch(now, ev(now, rng.randrange(0, 5 * USD)))
        for d in out:
            if d.type == "decision":
                assert not blocked or d.version != blocked_version  # re-issued only for a changed budget
                blocked, blocked_version = True, d.version
            elif d.type == "lift":
                assert blocked
                blocked = False
            elif d.type == "threshold":
                assert d.threshold is not None
                assert fired.get((d.window_start_ms, d.threshold), -1) < d.version  # again only after a raise
                fired[(d.window_start_ms, d.threshold)] = d.version
        spent = total(run.table[key], b, now) if key in run.table else 0
        assert blocked == (spent >= b.limit), (now, spent, b.limit)
    assert any(d.type == "lift" for d in run.log) and any(d.type == "decision" for d in run.log)


def test_spend_windows_facade_reads_and_writes_each_key_once_per_batch() -> None:
    from costplane.streams.core.spend import SpendWindows

    users = Budget.from_cli("per-user", scope="tenant=acme,user=*", limit_tokens=100, soft="0.5")
    windows = SpendWindows()
    table: dict[str, State] = {}
    t = at("2026-05-01T12:00:00")
    batch = [ev(t + i, tokens=30, user=f"u{i % 2}") for i in range(6)]  # 90 tokens each for u0 and u1
    inc = windows.aggregate(batch, [users])
    assert {k: {b: list(v) for b, v in buckets.items()} for k, buckets in inc.items()} == {
        "per-user|tenant=acme,user=u0": {window_start(users, t): [90, 0]},
        "per-user|tenant=acme,user=u1": {window_start(users, t): [90, 0]},
    }
    new, out = windows.apply(inc, [users], {k: table.get(k) for k in inc}, t)
    table.update(new)
    assert sorted((d.type, d.member) for d in out) == [
        ("threshold", "tenant=acme,user=u0"),
        ("threshold", "tenant=acme,user=u1"),
    ]
    new, out = windows.apply(windows.aggregate([ev(t, tokens=10, user="u0")], [users]), [users], table, t + 1)
    assert [(d.type, d.member, d.spent) for d in out] == [("decision", "tenant=acme,user=u0", 100)]
    assert total(new["per-user|tenant=acme,user=u0"], users, t) == 100
    # Increments of a budget deleted in between are skipped, not an error.
    assert windows.apply(inc, [], {}, t) == ({}, [])


def window_start(budget: Budget, when: int) -> int:
    return int(window_for(budget.period, budget.tz, when).start_ms)


def test_the_under_limit_shortcut_of_a_batch_is_what_evaluate_concludes() -> None:
    """apply_increments skips evaluate for keys under their limit with nothing standing and no threshold: on
    random states (old, current and future buckets, standing decisions, notified thresholds, under, at and over
    the limit) its states and decisions equal evaluating every key."""
    import random

    from costplane.streams.core.spend import copy_state

    rng = random.Random(7)
    budgets = [
        Budget.from_cli("day", scope="tenant=acme,user=*", limit_tokens=1000),
        Budget.from_cli("hour", scope="tenant=acme,user=*", period="rolling-1h", limit_tokens=1000),
        Budget.from_cli("soft", scope="tenant=acme,user=*", limit_tokens=1000, soft="0.5,0.8"),
        Budget.from_cli("usd", scope="tenant=acme,user=*", limit_usd="0.000001", action="notify"),
    ]
    now = at("2026-05-01T12:30:00")
    shortcuts = 0
    for case in range(400):
        budget = budgets[case % len(budgets)]
        key = f"{budget.id}|tenant=acme,user=u{case}"
        size = 60_000 * 60 if budget.period == "day" else 60_000
        before: State | None = None
        if rng.random() < 0.8:
            buckets = {
                str(window_start(budget, now) + size * rng.randrange(-3, 3)): [rng.randrange(900), rng.randrange(900)]
                for _ in range(rng.randrange(4))
            }
            standing = None
            if rng.random() < 0.2:
                standing = {
                    "action": budget.action,
                    "window_end_ms": now + 1,
                    "until_ms": now + 1,
                    "version": budget.version,
                    "limit": budget.limit,
                    "unit": budget.unit,
                }
            soft = [0.5] if budget.soft and rng.random() < 0.3 else []
            before = {"b": buckets, "soft": soft, "d": standing}
        start = window_start(budget, now) if budget.period == "day" else now - now % 60_000
        inc = {start: [rng.randrange(600), rng.randrange(600)]}
        room = budget.limit - total(before, budget, now)
        if case % 5 == 0 and room >= 0:  # exactly at the limit
            inc[start][0 if budget.unit == "tokens" else 1] = room
        got_states, got = apply_increments({key: inc}, [budget], {key: before}, now)
        state = copy_state(before)
        for at_ms, (tokens, nanos) in inc.items():
            cell = state["b"].setdefault(str(at_ms), [0, 0])
            cell[0] += tokens
            cell[1] += nanos
        want_state, want = evaluate(budget, key, state, now, in_place=True)
        assert got_states == {key: want_state}, (case, before, inc)
        assert got == want, (case, before, inc)
        shortcuts += not want and want_state["d"] is None and not budget.soft
    assert 50 < shortcuts < 400  # both paths were taken
