"""Spend windows and budget evaluation: pure, one call per batch, state as small JSON dicts for a Faust table.

One table key per budget and member (``"{budget_id}|{member}"``) holds everything that member's enforcement
needs, so a batch writes each key once and a restarted or rebalanced worker resumes from the changelog exactly:

``{"b": {bucket_start_ms: [tokens, nanos]}, "o": {partition: last offset applied}, "sw": window start of the
soft notifications, "soft": [thresholds notified], "d": the standing decision or None}``

``"o"`` makes redelivery harmless: Kafka redelivers a message at the same partition and offset, and the value
that counted it carries that offset in the same changelog record (one write, so never half applied). Producer
duplicates (same ``event_id`` at another offset) are filtered before this module by :mod:`.dedup`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

from costplane.budgets import Budget
from costplane.budgets.model import event_attrs
from costplane.budgets.windows import ROLLING, Window, bucket_for, buckets_in_window, window_for
from costplane.streams.core.priced import PricedEvent
from costplane.streams.core.spend import split_key, state_key, tenant_of
from costplane.streams.worker.pricing import event_tokens

State = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Located:
    """A priced event and where it was read (for redelivery dedup)."""

    priced: PricedEvent
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class CounterUpdate:
    """Set the guard's live counter of one bucket to the worker's exact total."""

    tenant: str
    budget_id: str
    member: str
    bucket_start_ms: int
    amount: int
    ttl_ms: int


@dataclass(slots=True)
class Outcome:
    """What a batch (or a re-evaluation) changed: table writes and the effects to apply, in order."""

    states: dict[str, State] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # to write to Redis + the decisions topic
    lifts: list[dict[str, Any]] = field(default_factory=list)  # to clear in Redis + publish
    notifications: list[dict[str, Any]] = field(default_factory=list)  # soft thresholds, published
    counters: list[CounterUpdate] = field(default_factory=list)
    counted: int = 0
    skipped_redelivered: int = 0


@lru_cache(maxsize=4096)
def _calendar_window(period: str, tz: str, quarter_hour: int) -> Window:
    # Every timezone offset is a multiple of 15 minutes, so day and month boundaries are too: one answer per block.
    return window_for(period, tz, quarter_hour * 900_000)


def current_window(period: str, tz: str, at_ms: int) -> Window:
    """:func:`window_for`, memoised for calendar periods (the datetime work dominated the worker's profile)."""
    if period in ROLLING:
        return window_for(period, tz, at_ms)
    return _calendar_window(period, tz, at_ms // 900_000)


def _buckets(period: str, tz: str, at_ms: int) -> list[Window]:
    if period in ROLLING:
        rolling: list[Window] = buckets_in_window(period, tz, at_ms)
        return rolling
    return [current_window(period, tz, at_ms)]


def empty_state() -> State:
    return {"b": {}, "o": {}, "sw": 0, "soft": [], "d": None}


def window_spent(budget: Budget, state: State, now_ms: int) -> int:
    """The member's total in the window containing ``now_ms``, in the budget's unit (tokens or nano-USD)."""
    idx = 0 if budget.unit == "tokens" else 1
    buckets = state["b"]
    return sum(int(buckets[str(w.start_ms)][idx]) for w in _buckets(budget.period, budget.tz, now_ms)
               if str(w.start_ms) in buckets)


def _prune(budget: Budget, state: State, now_ms: int) -> None:
    first = _buckets(budget.period, budget.tz, now_ms)[0].start_ms
    for start in [s for s in state["b"] if int(s) < first]:
        del state["b"][start]


def apply_batch(items: Sequence[Located], budgets: Iterable[Budget], states: Mapping[str, State | None],
                now_ms: int) -> Outcome:
    """Count a batch into every matching budget window, then evaluate each touched member once.

    ``states`` must hold the current value (or None) of every key the batch may touch; use :func:`touched_keys`.
    """
    out = Outcome()
    budget_list = list(budgets)
    touched: dict[str, Budget] = {}
    changed_buckets: dict[str, set[str]] = {}
    advanced: dict[str, dict[str, int]] = {}
    for item in items:
        ev = item.priced.event
        attrs = event_attrs(ev)
        tokens = event_tokens(ev)
        counted_once = False
        for budget in budget_list:
            member = budget.member_of(attrs)
            if member is None:
                continue
            key = state_key(budget.id, member)
            state = out.states.get(key)
            if state is None:
                prior = states.get(key)
                state = _copy(prior) if prior else empty_state()
                out.states[key] = state
            part = str(item.partition)
            if item.offset <= int(state["o"].get(part, -1)):
                out.skipped_redelivered += 1
                continue
            bucket = str((bucket_for(budget.period, budget.tz, ev.occurred_at) if budget.period in ROLLING
                          else current_window(budget.period, budget.tz, ev.occurred_at)).start_ms)
            cell = state["b"].setdefault(bucket, [0, 0])
            cell[0] += tokens
            cell[1] += item.priced.cost_nanos
            touched[key] = budget
            changed_buckets.setdefault(key, set()).add(bucket)
            marks = advanced.setdefault(key, {})
            if item.offset > marks.get(part, -1):
                marks[part] = item.offset
            counted_once = True
        if counted_once:
            out.counted += 1
    # Offsets advance after the whole batch (a message holds many events at one offset), for every key it touched.
    for key, marks in advanced.items():
        offsets = out.states[key]["o"]
        for part, offset in marks.items():
            if offset > int(offsets.get(part, -1)):
                offsets[part] = offset
    for key, budget in touched.items():
        _, member = split_key(key)
        state = out.states[key]
        _prune(budget, state, now_ms)
        _evaluate(budget, member, state, now_ms, out)
        amount_idx = 0 if budget.unit == "tokens" else 1
        window = current_window(budget.period, budget.tz, now_ms)
        for bucket in changed_buckets[key]:
            if bucket in state["b"]:
                size = ROLLING[budget.period][0] if budget.period in ROLLING else window.end_ms - window.start_ms
                ttl = max(int(bucket) + size - now_ms, 0) + (window.end_ms - window.start_ms)
                out.counters.append(CounterUpdate(tenant_of(member), budget.id, member, int(bucket),
                                                  int(state["b"][bucket][amount_idx]), max(ttl, 1000)))
    return out


def reevaluate(budget: Budget | None, key: str, state: State, now_ms: int, out: Outcome) -> None:
    """Re-check one member after a budget change or as time passes (lifts at window rollover)."""
    budget_id, member = split_key(key)
    if budget is None:  # the budget was deleted: lift whatever it decided
        if state.get("d"):
            out.lifts.append(_lift(budget_id, member, state["d"], "budget deleted", now_ms))
            state["d"] = None
            out.states[key] = state
        return
    before = (state.get("d"), list(state.get("soft", [])), state.get("sw"))
    _evaluate(budget, member, state, now_ms, out)
    if (state.get("d"), list(state.get("soft", [])), state.get("sw")) != before:
        out.states[key] = state


def _copy(state: State) -> State:
    return {"b": {k: list(v) for k, v in state.get("b", {}).items()}, "o": dict(state.get("o", {})),
            "sw": state.get("sw", 0), "soft": list(state.get("soft", [])), "d": state.get("d")}


def _evaluate(budget: Budget, member: str, state: State, now_ms: int, out: Outcome) -> None:
    window = current_window(budget.period, budget.tz, now_ms)
    spent = window_spent(budget, state, now_ms)
    standing = state.get("d")
    over = spent >= budget.limit
    if standing is not None:
        expired = int(standing["window_end_ms"]) <= now_ms
        changed = int(standing.get("version", 0)) != budget.version or standing.get("limit") != budget.limit
        if not over or expired or changed:
            reason = "window rolled over" if expired else ("budget raised" if not over else "budget changed")
            if not over or changed:
                out.lifts.append(_lift(budget.id, member, standing, reason, now_ms))
            state["d"] = None
            standing = None
    if over and standing is None:
        decision = _decision(budget, member, spent, window.start_ms, window.end_ms, now_ms)
        state["d"] = {k: decision[k] for k in ("action", "window_end_ms", "version", "limit")}
        out.decisions.append(decision)
    if state.get("sw") != window.start_ms:
        state["sw"], state["soft"] = window.start_ms, []
    for threshold in budget.soft:
        if threshold in state["soft"]:
            continue
        if Fraction(spent) >= Fraction(str(threshold)) * budget.limit:
            state["soft"].append(threshold)
            out.notifications.append({
                "type": "threshold", "tenant": tenant_of(member), "budget_id": budget.id, "member": member,
                "threshold": threshold, "spent": spent, "limit": budget.limit, "unit": budget.unit,
                "window_start_ms": window.start_ms, "window_end_ms": window.end_ms, "at_ms": now_ms,
                "dedup_key": f"{budget.id}|{member}|{window.start_ms}|{threshold}"})


def _decision(budget: Budget, member: str, spent: int, start_ms: int, end_ms: int, now_ms: int) -> dict[str, Any]:
    action = "degrade" if budget.degrade_model else budget.action
    return {
        "type": "decision", "action": action, "tenant": tenant_of(member), "budget_id": budget.id, "member": member,
        "reason": f"{budget.unit} spent {spent} reached the limit {budget.limit} ({budget.limit_display()})",
        "spent": spent, "limit": budget.limit, "unit": budget.unit, "window_start_ms": start_ms,
        "window_end_ms": end_ms, "degrade_model": budget.degrade_model, "version": budget.version,
        "decided_at_ms": now_ms,
    }


def _lift(budget_id: str, member: str, standing: Mapping[str, Any], reason: str, now_ms: int) -> dict[str, Any]:
    return {"type": "lift", "tenant": tenant_of(member), "budget_id": budget_id, "member": member,
            "action": standing.get("action"), "reason": reason, "at_ms": now_ms}


def touched_keys(items: Iterable[Located], budgets: Iterable[Budget]) -> set[str]:
    """Every table key a batch may write (so the caller reads each once)."""
    budget_list = list(budgets)
    keys: set[str] = set()
    for item in items:
        attrs = event_attrs(item.priced.event)
        for budget in budget_list:
            member = budget.member_of(attrs)
            if member is not None:
                keys.add(state_key(budget.id, member))
    return keys
