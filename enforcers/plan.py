"""Pure planning for the guard: which budgets a call touches, which keys, what amounts, and what answers mean.

Kept apart from Redis so the same plan drives the Redis store, the in-memory store, and the sync and async guards.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from costplane.budgets.model import Budget
from costplane.budgets.windows import bucket_for, window_for
from costplane.enforcers.keys import KeyLayout

Kind = Literal["allow", "block", "degrade"]
BLOCK, DEGRADE = 1, 2
USD, TOKENS = 1, 2


@dataclass(frozen=True, slots=True)
class Answer:
    """What the guard tells the app: ``allow``, ``block`` (with reason and retry_after) or ``degrade`` (model)."""

    kind: Kind
    reason: str = ""
    retry_after_s: float = 0.0
    model: str | None = None
    budget_id: str | None = None
    #: On a Block by a reservation: what the budget held (settled + open reservations) and its limit, at refusal.
    held: int | None = None
    limit: int | None = None

    @property
    def allowed(self) -> bool:
        return self.kind != "block"


ALLOW = Answer("allow")


@dataclass(frozen=True, slots=True)
class Slot:
    """One budget × member a call counts against, for the current counter bucket: its keys and window bounds.

    Stable until the bucket rolls over, so it is built once per plan, with its fixed script arguments.
    """

    budget: Budget
    member: str
    counter_key: str  # one hash per budget member: buckets, reservation records and the scripts' state field
    window_start_ms: int
    bucket_start_ms: int
    bucket_end_ms: int
    window_end_ms: int
    #: The counter must live until then: its last bucket has left the window, and every reservation made while
    #: this window is current has expired (plus a minute for a late settle).
    keep_until_ms: int
    #: ``_<window start>:<keep until>:<limit>``: the counter's state field for this window (docs/enforcement.md).
    #: Everything the state depends on is in its name, so a moved window or a changed limit finds no field and
    #: the script rebuilds it, without reading anything on the common path.
    state_field: str

    @property
    def mode(self) -> int:
        return DEGRADE if self.budget.degrade_model else BLOCK

    @property
    def unit(self) -> int:
        """1: the slot counts nano-USD, 2: tokens (which of a call's two amounts the scripts take)."""
        return USD if self.budget.unit == "usd" else TOKENS

    @property
    def reserve_code(self) -> str:
        """The reserve script's per-budget code: ``u``/``t`` block on nano-USD/tokens, ``U``/``T`` degrade."""
        code = "u" if self.unit == USD else "t"
        return code.upper() if self.mode == DEGRADE else code


@dataclass(frozen=True, slots=True)
class ReservePlan:
    """What a scope's calls touch until the first of its counter buckets rolls over (or the budgets change).

    Carries both scripts' keys and their per-budget arguments, built once: a call only puts its record field,
    clock and amounts in front of the tail (the scripts' KEYS and ARGV layouts: ``reserve.lua``, ``settle.lua``).
    """

    tenant: str
    decision_keys: tuple[str, ...]
    slots: tuple[Slot, ...]
    valid_until_ms: int
    reserve_keys: tuple[str, ...] = ()  # the decision keys, then one counter per slot
    reserve_tail: tuple[str, ...] = ()  # per slot: reserve code, state field
    settle_keys: tuple[str, ...] = ()  # one counter per slot
    settle_tail: tuple[str | int, ...] = ()  # per slot: unit code, state field, bucket start

    @property
    def usd(self) -> tuple[bool, ...]:
        return tuple(s.budget.unit == "usd" for s in self.slots)


@dataclass(slots=True)
class ReserveRequest:
    """One call's reservation: a plan plus this call's id, clock, expiry and worst case (nano-USD and tokens).

    Not frozen: one is built per guarded call, and a frozen dataclass pays a ``object.__setattr__`` per field.
    """

    reservation_id: str
    now_ms: int
    expiry_ms: int
    plan: ReservePlan
    nanos: int
    tokens: int

    @property
    def amounts(self) -> tuple[int, ...]:
        """The amount reserved on each slot: the nano-USD or the token worst case, by the budget's unit."""
        return tuple(self.nanos if s.unit == USD else self.tokens for s in self.plan.slots)

    @property
    def tenant(self) -> str:
        return self.plan.tenant

    @property
    def field(self) -> str:
        """The reservation's record in each budget's counter hash; its expiry in the name serves the purge."""
        return f"r{self.expiry_ms}:{self.reservation_id}"

    @property
    def decision_keys(self) -> tuple[str, ...]:
        return self.plan.decision_keys

    @property
    def slots(self) -> tuple[Slot, ...]:
        return self.plan.slots


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """Raw store answer: stream decisions found, or the exhausted slot index, or the degraded slot indexes."""

    decisions: tuple[str, ...] = ()
    exhausted: int | None = None  # 0-based slot index
    degraded: tuple[int, ...] = ()
    held: int | None = None  # settled + open on the exhausted budget when it refused


#: The common answer (reserved on every budget), shared rather than built per call.
RESERVED = ReserveResult()


def scope_attrs(scope: Mapping[str, str | None]) -> dict[str, str | None]:
    """Normalise a call scope (``user_id`` is accepted for ``user``)."""
    attrs = dict(scope)
    if "user" not in attrs and "user_id" in attrs:
        attrs["user"] = attrs.pop("user_id")
    return attrs


def matching(budgets: Sequence[Budget], scope: Mapping[str, str | None]) -> list[tuple[Budget, str]]:
    """Budgets whose scope covers the call, with the member key the call counts under."""
    attrs = scope_attrs(scope)
    out = []
    for budget in budgets:
        member = budget.member_of(attrs)
        if member is not None:
            out.append((budget, member))
    return out


def decision_keys(keys: KeyLayout, tenant: str, matched: Sequence[tuple[Budget, str]]) -> tuple[str, ...]:
    return tuple(keys.decision(tenant, b.id, m) for b, m in matched)


def make_slot(
    keys: KeyLayout, tenant: str, budget: Budget, member: str, now_ms: int, reservation_ttl_ms: int = 300_000
) -> Slot:
    bucket = bucket_for(budget.period, budget.tz, now_ms)
    window = window_for(budget.period, budget.tz, now_ms)
    ckey = keys.spent(tenant, budget.id, member)
    length = window.end_ms - window.start_ms
    # The window (for rolling periods: its current bucket) ends before the state field changes, so nothing made
    # under this field needs the counter past its end + a window (the buckets) or + a reservation TTL (records).
    keep = window.end_ms + max(length, reservation_ttl_ms) + 60_000
    state = f"_{window.start_ms}:{keep}:{budget.limit}"
    return Slot(
        budget=budget,
        member=member,
        counter_key=ckey,
        window_start_ms=window.start_ms,
        bucket_start_ms=bucket.start_ms,
        bucket_end_ms=bucket.end_ms,
        window_end_ms=window.end_ms,
        keep_until_ms=keep,
        state_field=state,
    )


def build_plan(
    keys: KeyLayout, tenant: str, matched: Sequence[tuple[Budget, str]], now_ms: int, reservation_ttl_ms: int = 300_000
) -> ReservePlan:
    """The plan of a scope: decisions to read, and the enforcing (block / degrade) budgets to reserve on."""
    dkeys = decision_keys(keys, tenant, matched)
    slots = tuple(make_slot(keys, tenant, b, m, now_ms, reservation_ttl_ms) for b, m in matched if b.action != "notify")
    valid_until = min((s.bucket_end_ms for s in slots), default=now_ms + 3_600_000)
    counters = tuple(s.counter_key for s in slots)
    # reserve ARGV: field, now, nanos, tokens | per slot (code, state field)
    reserve_tail = tuple(a for s in slots for a in (s.reserve_code, s.state_field))
    # settle ARGV: field, now, actual nanos, actual tokens, their moves | per slot (unit code, state, bucket start)
    settle_tail = tuple(a for s in slots for a in (s.reserve_code.lower(), s.state_field, s.bucket_start_ms))
    return ReservePlan(tenant, dkeys, slots, valid_until, dkeys + counters, reserve_tail, counters, settle_tail)


class PlanCache:
    """Plans per scope, rebuilt only when a bucket rolls over or the tenant's budget list is reloaded.

    Matching budgets, building keys and timezone-aware windows cost far more than the reservation itself; for one
    scope they do not change within a bucket (5 s to a month). Bounded: past ``max_entries`` it starts over.
    """

    def __init__(self, keys: KeyLayout, max_entries: int = 10_000, reservation_ttl_ms: int = 300_000) -> None:
        self.keys = keys
        self.max_entries = max_entries
        self.reservation_ttl_ms = reservation_ttl_ms
        self._entries: dict[tuple[tuple[str, str | None], ...], tuple[object, ReservePlan]] = {}

    def plan(
        self,
        scope_key: tuple[tuple[str, str | None], ...],
        tenant: str,
        scope: Mapping[str, str | None],
        budgets: Sequence[Budget],
        now_ms: int,
    ) -> ReservePlan:
        hit = self._entries.get(scope_key)
        if hit is not None and hit[0] is budgets and now_ms < hit[1].valid_until_ms:
            return hit[1]
        made = build_plan(self.keys, tenant, matching(budgets, scope), now_ms, self.reservation_ttl_ms)
        if hit is None and len(self._entries) >= self.max_entries:
            self._entries.clear()  # safe under concurrent threads (no iteration); rebuilt on the next calls
        self._entries[scope_key] = (budgets, made)
        return made

    def rolled(self, plan: ReservePlan, scope_key: tuple[tuple[str, str | None], ...], now_ms: int) -> ReservePlan:
        """``plan``'s budgets at ``now_ms``: what a settle after the plan's bucket rolled over writes to.

        A settle charges the bucket it happens in and moves the state of the window in force, like the reserves
        beside it; the reservation's own budgets are settled even if the tenant's list changed since.
        """
        hit = self._entries.get(scope_key)
        if (
            hit is not None
            and now_ms < hit[1].valid_until_ms
            and len(hit[1].slots) == len(plan.slots)
            and all(
                a.budget is b.budget and a.member == b.member for a, b in zip(hit[1].slots, plan.slots, strict=True)
            )
        ):
            return hit[1]
        return build_plan(
            self.keys, plan.tenant, [(s.budget, s.member) for s in plan.slots], now_ms, self.reservation_ttl_ms
        )


def answer_from_decisions(raw: Sequence[str | bytes], now_ms: int) -> Answer:
    """The stream's decisions for a scope → one answer (block beats degrade)."""
    parsed = []
    for item in raw:
        try:
            parsed.append(json.loads(item))
        except (TypeError, ValueError):
            continue
    for d in parsed:
        if d.get("action") == "block":
            end = int(d.get("window_end_ms") or now_ms)
            return Answer(
                "block",
                reason=f"budget {d.get('budget_id')} exhausted: {d.get('reason', 'limit reached')}",
                retry_after_s=max(end - now_ms, 0) / 1000,
                budget_id=d.get("budget_id"),
            )
    for d in parsed:
        if d.get("action") == "degrade" and d.get("degrade_model"):
            return Answer(
                "degrade",
                reason=f"budget {d.get('budget_id')} over its limit",
                model=str(d["degrade_model"]),
                budget_id=d.get("budget_id"),
            )
    return ALLOW


def answer_from_reserve(req: ReserveRequest, result: ReserveResult) -> Answer:
    if result is RESERVED:
        return ALLOW
    if result.decisions:
        return answer_from_decisions(result.decisions, req.now_ms)
    if result.exhausted is not None:
        slot = req.slots[result.exhausted]
        return Answer(
            "block",
            reason=f"budget {slot.budget.id} ({slot.budget.limit_display()}) would be exceeded",
            retry_after_s=max(slot.window_end_ms - req.now_ms, 0) / 1000,
            budget_id=slot.budget.id,
            held=result.held,
            limit=slot.budget.limit,
        )
    if result.degraded:
        slot = req.slots[result.degraded[0]]
        return Answer(
            "degrade",
            reason=f"budget {slot.budget.id} would be exceeded",
            model=slot.budget.degrade_model,
            budget_id=slot.budget.id,
        )
    return ALLOW
