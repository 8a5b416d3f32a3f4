"""Spend windows per (budget, member) and the decisions they imply: pure, one update per key per batch.

State of one key is a small JSON-compatible dict, stored by the worker under the key ``"{budget_id}|{member}"``
(see :mod:`costplane.streams.worker.windowstore`)::

    {"b": {"<bucket start ms>": [tokens, nanos], ...},   # only buckets of the current window (and the future)
     "soft": [0.5, ...],                                  # soft thresholds already notified (armed again below)
     "d": {"action": ..., "window_end_ms": ..., "until_ms": ..., "version": ..., "limit": ...} | None}

Unknown keys are kept untouched, so a caller may store its own bookkeeping (e.g. offsets) in the same value.

Decisions are edge-triggered: a ``decision`` (block / degrade) when the hard limit is reached, a ``lift`` when it
no longer holds (budget raised, window rolled over, spend aged out of a rolling window, budget deleted), a
``notify`` once when a notify-only budget reaches its limit, and a ``threshold`` once per soft threshold crossed
(armed again only when the spend falls back below it: a new calendar window, a raised limit, or rolling spend
ageing out). A budget change is applied to the current window at once: call :func:`evaluate` with the new budget.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Literal

from costplane.budgets import Budget, Window
from costplane.budgets.windows import ROLLING, WindowCache, buckets_in_window
from costplane.publisher.identifiers import unescape
from costplane.streams.core.priced import PricedEvent

State = dict[str, Any]
DecisionType = Literal["decision", "lift", "notify", "threshold"]


@dataclass(frozen=True, slots=True)
class Decision:
    """One enforcement record: written to Redis (``decision``; ``lift`` deletes it) and to the decisions topic.

    ``spent`` and ``limit`` are in the budget's unit (integer nano-USD or tokens). ``until_ms`` is when the
    decision stops holding if nothing more is spent: the window's end for calendar periods, the moment enough
    rolling buckets have aged out for rolling ones; use it as the Redis expiry and the guard's retry-after.
    """

    type: DecisionType
    action: str  # block | degrade | notify (for a lift: the action lifted)
    tenant: str
    budget_id: str
    member: str
    reason: str
    spent: int
    limit: int
    unit: str
    window_start_ms: int
    window_end_ms: int
    until_ms: int
    version: int
    at_ms: int
    degrade_model: str | None = None
    threshold: float | None = None

    @property
    def dedup_key(self) -> str:
        """Stable per budget, member and window (and threshold): replays publish nothing new under it."""
        tail = f"|{self.threshold}" if self.threshold is not None else ""
        return f"{self.type}|{self.budget_id}|{self.member}|{self.window_start_ms}{tail}"

    def ttl_ms(self, now_ms: int) -> int:
        """How long the Redis record should live (at least one second)."""
        return max(self.until_ms - now_ms, 1_000)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dedup_key": self.dedup_key}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Decision:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def split_key(key: str) -> tuple[str, str]:
    budget_id, _, member = key.partition("|")
    return budget_id, member


def tenant_of(member: str) -> str:
    for part in member.split(","):
        name, _, value = part.partition("=")
        if name == "tenant":
            return unescape(value)
    return ""


def empty_state() -> State:
    return {"b": {}, "soft": [], "d": None}


def event_tokens(p: PricedEvent) -> int:
    e = p.event
    return int(e.input_tokens + e.cached_input_tokens + e.cache_write_tokens + e.output_tokens + e.reasoning_tokens)


# -- spend windows ------------------------------------------------------------------------------------------------
def aggregate(
    events: Iterable[PricedEvent], budgets: Iterable[Budget], windows: WindowCache | None = None
) -> dict[str, dict[int, list[int]]]:
    """Sum a batch per table key and bucket first (``{key: {bucket_start: [tokens, nanos]}}``), so each key is
    read and written once per batch however many of its events the batch holds."""
    matchers = [(b.id, b.period, b.tz, b.event_member()) for b in budgets]
    windows = windows or WindowCache()
    out: dict[str, dict[int, list[int]]] = {}
    for p in events:
        ev = p.event
        tokens = event_tokens(p)
        for budget_id, period, tz, member_of in matchers:
            member = member_of(ev)
            if member is None:
                continue
            bucket = windows.bucket(period, tz, ev.occurred_at).start_ms
            cell = out.setdefault(f"{budget_id}|{member}", {}).setdefault(bucket, [0, 0])
            cell[0] += tokens
            cell[1] += p.cost_nanos
    return out


def copy_state(state: State | None) -> State:
    if not state:
        return empty_state()
    return {
        **state,
        "b": {k: list(v) for k, v in state.get("b", {}).items()},
        "soft": list(state.get("soft", [])),
        "d": dict(state["d"]) if state.get("d") else None,
    }


def _until(budget: Budget, state: State, now_ms: int, spent: int, w: Window) -> int:
    """When the spend stops reaching the limit if nothing more is spent (window end for calendar periods)."""
    if budget.period not in ROLLING:
        return int(w.end_ms)
    idx = 0 if budget.unit == "tokens" else 1
    size: int = ROLLING[budget.period][0]
    count: int = ROLLING[budget.period][1]
    remaining = spent
    for bucket in buckets_in_window(budget.period, budget.tz, now_ms):
        remaining -= int(state["b"].get(str(bucket.start_ms), [0, 0])[idx])
        if remaining < budget.limit:
            return int(bucket.end_ms) + size * count - size  # when it leaves the window
    return int(w.end_ms + w.end_ms - w.start_ms)  # a zero limit: holds a whole window more


# -- decisions ----------------------------------------------------------------------------------------------------
def evaluate(
    budget: Budget | None,
    key: str,
    state: State | None,
    now_ms: int,
    budget_id: str | None = None,
    windows: WindowCache | None = None,
    *,
    in_place: bool = False,
) -> tuple[State, list[Decision]]:
    """Re-check one member: after a batch, after a budget change, or on a timer (lifts at rollover).

    Returns the new state (write it back when it differs) and the decisions to apply, in order. ``budget`` None
    means the budget was deleted: any standing decision is lifted. ``in_place`` updates ``state`` itself instead
    of a copy (for a state the caller has just made, as :func:`apply_increments` does).
    """
    bid, member = split_key(key)
    new = state if in_place and state is not None else copy_state(state)
    out: list[Decision] = []
    standing: dict[str, Any] | None = new.get("d")
    if budget is None:
        if standing and standing["action"] != "notify":
            out.append(
                _record(
                    "lift",
                    standing["action"],
                    budget_id or bid,
                    member,
                    "budget deleted",
                    0,
                    int(standing.get("limit", 0)),
                    str(standing.get("unit", "")),
                    0,
                    int(standing["window_end_ms"]),
                    now_ms,
                    int(standing.get("version", 0)),
                    now_ms,
                )
            )
        return {**new, "d": None, "soft": []}, out
    windows = windows or WindowCache()
    w = windows.window(budget.period, budget.tz, now_ms)
    spent = _prune_total(new, 0 if budget.unit == "tokens" else 1, w)
    over = spent >= budget.limit
    action = "degrade" if budget.degrade_model else budget.action
    until = _until(budget, new, now_ms, spent, w) if over else w.end_ms

    def record(kind: DecisionType, act: str, reason: str, threshold: float | None = None) -> Decision:
        """A record of this key now; a lift holds until now and names no degrade model (nothing is degraded)."""
        return _record(
            kind,
            act,
            budget.id,
            member,
            reason,
            spent,
            budget.limit,
            budget.unit,
            w.start_ms,
            w.end_ms,
            now_ms if kind == "lift" else until,
            budget.version,
            now_ms,
            budget.degrade_model if act == "degrade" and kind != "lift" else None,
            threshold,
        )

    if standing is not None:
        rolled = budget.period not in ROLLING and int(standing["window_end_ms"]) <= w.start_ms
        changed = (int(standing.get("version", 0)), int(standing.get("limit", 0)), standing["action"]) != (
            budget.version,
            budget.limit,
            action,
        )
        if not over or rolled or standing["action"] != action:
            if standing["action"] != "notify":
                reason = (
                    "window rolled over"
                    if rolled
                    else "budget raised"
                    if changed and not over
                    else "budget action changed"
                    if standing["action"] != action
                    else "spend aged out of the rolling window"
                )
                out.append(record("lift", standing["action"], reason))
            standing = None
        elif changed or int(standing.get("until_ms", 0)) != until:
            if action != "notify":  # still over under a changed budget, or rolling spend keeps it over longer
                out.append(record("decision", action, _reason(budget, spent)))
            standing = _standing(action, w.end_ms, until, budget)
    if over and standing is None:
        if action == "notify":
            out.append(record("notify", "notify", _reason(budget, spent)))
        else:
            out.append(record("decision", action, _reason(budget, spent)))
        standing = _standing(action, w.end_ms, until, budget)
    new["d"] = standing
    # Soft thresholds: armed again below their level (new window, raised limit, rolling spend ageing out).
    if not budget.soft and not new["soft"]:
        return new, out
    notified = [t for t in new["soft"] if Fraction(spent) >= Fraction(str(t)) * budget.limit]
    for threshold in budget.soft:
        if threshold not in notified and Fraction(spent) >= Fraction(str(threshold)) * budget.limit:
            notified.append(threshold)
            out.append(
                record(
                    "threshold",
                    "notify",
                    f"{threshold:.0%} of {budget.limit_display()} reached ({spent} of {budget.limit} {budget.unit})",
                    threshold,
                )
            )
    new["soft"] = sorted(notified)
    return new, out


def apply_increments(
    increments: Mapping[str, Mapping[int, Iterable[int]]],
    budgets: Iterable[Budget],
    states: Mapping[str, State | None],
    now_ms: int,
    windows: WindowCache | None = None,
) -> tuple[dict[str, State], list[Decision]]:
    """Add :func:`aggregate`'s per-key increments to their states and evaluate each key once.

    ``states`` holds the current table value (or None) of every key in ``increments``. Returns the new values of
    those keys (write each back once) and the decisions, in order. Keys of unknown budgets are skipped.
    """
    windows = windows or WindowCache()
    by_id = {b.id: b for b in budgets}
    in_force: dict[str, Window] = {}  # each budget's window at ``now_ms``, looked up once per batch
    new_states: dict[str, State] = {}
    decisions: list[Decision] = []
    for key, inc in increments.items():
        budget_id = key.partition("|")[0]
        budget = by_id.get(budget_id)
        if budget is None:
            continue
        state = copy_state(states.get(key))  # evaluate prunes it once the increments are in
        buckets: dict[str, list[int]] = state["b"]
        for start, (tokens, nanos) in inc.items():
            cell = buckets.get(str(start))
            if cell is None:
                buckets[str(start)] = [int(tokens), int(nanos)]
            else:
                cell[0] += int(tokens)
                cell[1] += int(nanos)
        w = in_force.get(budget_id)
        if w is None:
            w = in_force[budget_id] = windows.window(budget.period, budget.tz, now_ms)
        if (
            state["d"] is None
            and not state["soft"]
            and not budget.soft
            and _prune_total(state, 0 if budget.unit == "tokens" else 1, w) < budget.limit
        ):
            # Nearly every key: under its limit, nothing standing, no threshold to arm. What evaluate would
            # conclude (pruned state, no decision) without its bookkeeping.
            new_states[key] = state
            continue
        state, out = evaluate(budget, key, state, now_ms, windows=windows, in_place=True)
        new_states[key] = state
        decisions.extend(out)
    return new_states, decisions


def _prune_total(state: State, idx: int, w: Window) -> int:
    """Drop the buckets older than the window ``w`` and return the spend in it (column ``idx``), in one pass."""
    buckets = state["b"]
    start, end = w.start_ms, w.end_ms
    spent = 0
    old = None
    for s, v in buckets.items():
        at = int(s)
        if at < start:
            old = [s] if old is None else [*old, s]
        elif at < end:
            spent += int(v[idx])
    if old is not None:
        for s in old:
            del buckets[s]
    return spent


class SpendWindows:
    """The worker's entry point: the functions above with one :class:`WindowCache` kept across batches.

    Per ``stream.take`` batch::

        inc = windows.aggregate(events, budgets)                  # one pass, summed per key and bucket
        states = {k: table.get(k) for k in inc}                   # read each touched key once
        new, decisions = windows.apply(inc, budgets, states, now_ms)
        table.update(new)                                         # write each touched key once

    On a budget change or a timer: ``windows.evaluate(budget, key, table[key], now_ms)`` for that budget's keys.
    """

    __slots__ = ("cache",)

    def __init__(self) -> None:
        self.cache = WindowCache()

    def aggregate(self, events: Iterable[PricedEvent], budgets: Iterable[Budget]) -> dict[str, dict[int, list[int]]]:
        return aggregate(events, budgets, self.cache)

    def apply(
        self,
        increments: Mapping[str, Mapping[int, Iterable[int]]],
        budgets: Iterable[Budget],
        states: Mapping[str, State | None],
        now_ms: int,
    ) -> tuple[dict[str, State], list[Decision]]:
        return apply_increments(increments, budgets, states, now_ms, self.cache)

    def evaluate(
        self, budget: Budget | None, key: str, state: State | None, now_ms: int
    ) -> tuple[State, list[Decision]]:
        return evaluate(budget, key, state, now_ms, windows=self.cache)


def _standing(action: str, window_end_ms: int, until_ms: int, budget: Budget) -> dict[str, Any]:
    return {
        "action": action,
        "window_end_ms": window_end_ms,
        "until_ms": until_ms,
        "version": budget.version,
        "limit": budget.limit,
        "unit": budget.unit,
    }


def _reason(budget: Budget, spent: int) -> str:
    what = "tokens" if budget.unit == "tokens" else "nano-USD"
    return f"{spent} {what} spent reached the limit {budget.limit_display()} per {budget.period}"


def _record(
    kind: DecisionType,
    action: str,
    budget_id: str,
    member: str,
    reason: str,
    spent: int,
    limit: int,
    unit: str,
    start: int,
    end: int,
    until: int,
    version: int,
    now_ms: int,
    degrade_model: str | None = None,
    threshold: float | None = None,
) -> Decision:
    return Decision(
        type=kind,
        action=action,
        tenant=tenant_of(member),
        budget_id=budget_id,
        member=member,
        reason=reason,
        spent=spent,
        limit=limit,
        unit=unit,
        window_start_ms=start,
        window_end_ms=end,
        until_ms=until,
        version=version,
        at_ms=now_ms,
        degrade_model=degrade_model,
        threshold=threshold,
    )
