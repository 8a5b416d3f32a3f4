"""Pure planning for the guard: which budgets a call touches, which keys, what amounts, and what answers mean.

Kept apart from Redis so the same plan drives the Redis store, the in-memory store, and the sync and async guards.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from costplane.budgets.model import Budget
from costplane.budgets.windows import bucket_for, window_for
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.resp import bulks

Kind = Literal["allow", "block", "degrade"]
BLOCK, DEGRADE = 1, 2


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

    Stable until the bucket rolls over, so it is built once per plan, with its keys and fixed script arguments
    already encoded for the wire (``wire_*``); the amount of each call travels beside it.
    """

    budget: Budget
    member: str
    counter_key: str  # one hash per budget member: buckets, open reservations and the script's running state
    window_start_ms: int
    bucket_start_ms: int
    bucket_end_ms: int
    window_end_ms: int
    counter_ttl_ms: int
    wire_keys: bytes = b""
    wire_reserve: bytes = b""
    wire_settle: bytes = b""

    @property
    def mode(self) -> int:
        return DEGRADE if self.budget.degrade_model else BLOCK


@dataclass(frozen=True, slots=True)
class ReservePlan:
    """What a scope's calls touch until the first of its counter buckets rolls over (or the budgets change)."""

    tenant: str
    decision_keys: tuple[str, ...]
    slots: tuple[Slot, ...]
    valid_until_ms: int
    wire_keys: bytes = b""  # decision keys then each slot's counter key, RESP-encoded

    @property
    def usd(self) -> tuple[bool, ...]:
        return tuple(s.budget.unit == "usd" for s in self.slots)


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """One call's reservation: a plan plus this call's id, clock, expiry and amount per slot."""

    reservation_id: str
    now_ms: int
    expiry_ms: int
    plan: ReservePlan
    amounts: tuple[int, ...]

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


@dataclass(slots=True)
class ReserveResult:
    """Raw store answer: stream decisions found, or the exhausted slot index, or the degraded slot indexes."""

    decisions: list[str] = field(default_factory=list)
    exhausted: int | None = None  # 0-based slot index
    degraded: list[int] = field(default_factory=list)
    held: int | None = None  # settled + open on the exhausted budget when it refused


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


def make_slot(keys: KeyLayout, tenant: str, budget: Budget, member: str, now_ms: int) -> Slot:
    bucket = bucket_for(budget.period, budget.tz, now_ms)
    window = window_for(budget.period, budget.tz, now_ms)
    ckey = keys.spent(tenant, budget.id, member)
    mode = DEGRADE if budget.degrade_model else BLOCK
    ttl = max(window.end_ms - now_ms, 0) + (window.end_ms - window.start_ms) + 60_000
    return Slot(budget=budget, member=member, counter_key=ckey,
                window_start_ms=window.start_ms, bucket_start_ms=bucket.start_ms, bucket_end_ms=bucket.end_ms,
                window_end_ms=window.end_ms, counter_ttl_ms=ttl, wire_keys=bulks((ckey,)),
                wire_reserve=bulks((budget.limit, mode, window.start_ms)),
                wire_settle=bulks((ttl, bucket.start_ms)))


def build_plan(keys: KeyLayout, tenant: str, matched: Sequence[tuple[Budget, str]], now_ms: int) -> ReservePlan:
    """The plan of a scope: decisions to read, and the enforcing (block / degrade) budgets to reserve on."""
    dkeys = decision_keys(keys, tenant, matched)
    slots = tuple(make_slot(keys, tenant, b, m, now_ms) for b, m in matched if b.action != "notify")
    valid_until = min((s.bucket_end_ms for s in slots), default=now_ms + 3_600_000)
    return ReservePlan(tenant, dkeys, slots, valid_until,
                       bulks(dkeys) + b"".join(s.wire_keys for s in slots))


class PlanCache:
    """Plans per scope, rebuilt only when a bucket rolls over or the tenant's budget list is reloaded.

    Matching budgets, building keys and timezone-aware windows cost far more than the reservation itself; for one
    scope they do not change within a bucket (5 s to a month). Bounded: past ``max_entries`` it starts over.
    """

    def __init__(self, keys: KeyLayout, max_entries: int = 10_000) -> None:
        self.keys = keys
        self.max_entries = max_entries
        self._entries: dict[tuple[tuple[str, str | None], ...], tuple[object, ReservePlan]] = {}

    def plan(self, scope_key: tuple[tuple[str, str | None], ...], tenant: str, scope: Mapping[str, str | None],
             budgets: Sequence[Budget], now_ms: int) -> ReservePlan:
        hit = self._entries.get(scope_key)
        if hit is not None and hit[0] is budgets and now_ms < hit[1].valid_until_ms:
            return hit[1]
        made = build_plan(self.keys, tenant, matching(budgets, scope), now_ms)
        if hit is None and len(self._entries) >= self.max_entries:
            self._entries.clear()  # safe under concurrent threads (no iteration); rebuilt on the next calls
        self._entries[scope_key] = (budgets, made)
        return made


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
            return Answer("block", reason=f"budget {d.get('budget_id')} exhausted: {d.get('reason', 'limit reached')}",
                          retry_after_s=max(end - now_ms, 0) / 1000, budget_id=d.get("budget_id"))
    for d in parsed:
        if d.get("action") == "degrade" and d.get("degrade_model"):
            return Answer("degrade", reason=f"budget {d.get('budget_id')} over its limit",
                          model=str(d["degrade_model"]), budget_id=d.get("budget_id"))
    return ALLOW


def answer_from_reserve(req: ReserveRequest, result: ReserveResult) -> Answer:
    if result.decisions:
        return answer_from_decisions(result.decisions, req.now_ms)
    if result.exhausted is not None:
        slot = req.slots[result.exhausted]
        return Answer("block", reason=f"budget {slot.budget.id} ({slot.budget.limit_display()}) would be exceeded",
                      retry_after_s=max(slot.window_end_ms - req.now_ms, 0) / 1000, budget_id=slot.budget.id,
                      held=result.held, limit=slot.budget.limit)
    if result.degraded:
        slot = req.slots[result.degraded[0]]
        return Answer("degrade", reason=f"budget {slot.budget.id} would be exceeded", model=slot.budget.degrade_model,
                      budget_id=slot.budget.id)
    return ALLOW


def granted_slots(req: ReserveRequest, result: ReserveResult) -> tuple[Slot, ...]:
    """Slots that actually hold a reservation (degraded budgets do not)."""
    if result.decisions or result.exhausted is not None:
        return ()
    skip = set(result.degraded)
    return tuple(s for i, s in enumerate(req.slots) if i not in skip)
