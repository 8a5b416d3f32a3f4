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

    @property
    def allowed(self) -> bool:
        return self.kind != "block"


ALLOW = Answer("allow")


@dataclass(frozen=True, slots=True)
class Slot:
    """One budget × member a call counts against, with its keys and this call's amount."""

    budget: Budget
    member: str
    amount: int
    reservations_key: str
    amounts_key: str
    counter_key: str
    window_start_ms: int
    bucket_start_ms: int
    window_end_ms: int
    counter_ttl_ms: int

    @property
    def mode(self) -> int:
        return DEGRADE if self.budget.degrade_model else BLOCK


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    tenant: str
    reservation_id: str
    now_ms: int
    expiry_ms: int
    decision_keys: tuple[str, ...]
    slots: tuple[Slot, ...]


@dataclass(slots=True)
class ReserveResult:
    """Raw store answer: stream decisions found, or the exhausted slot index, or the degraded slot indexes."""

    decisions: list[str] = field(default_factory=list)
    exhausted: int | None = None  # 0-based slot index
    degraded: list[int] = field(default_factory=list)


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


@dataclass(frozen=True, slots=True)
class _SlotTemplate:
    """Everything about a budget × member slot that only changes when the counter bucket changes."""

    reservations_key: str
    amounts_key: str
    counter_key: str
    window_start_ms: int
    bucket_start_ms: int
    bucket_end_ms: int
    window_end_ms: int
    counter_ttl_ms: int


class SlotCache:
    """Keys and window bounds per (budget, member), recomputed only when the call crosses into a new bucket.

    Building keys and timezone-aware windows costs far more than the reservation itself; within one bucket
    (5 s to a month) they do not change. Bounded: the oldest entries go first past ``max_entries``.
    """

    def __init__(self, keys: KeyLayout, max_entries: int = 10_000) -> None:
        self.keys = keys
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str, str, int], _SlotTemplate] = {}

    def template(self, tenant: str, budget: Budget, member: str, now_ms: int) -> _SlotTemplate:
        key = (tenant, budget.identity(), member, 0)
        hit = self._entries.get(key)
        if hit is not None and hit.bucket_start_ms <= now_ms < hit.bucket_end_ms:
            return hit
        bucket = bucket_for(budget.period, budget.tz, now_ms)
        window = window_for(budget.period, budget.tz, now_ms)
        made = _SlotTemplate(
            reservations_key=self.keys.reservations(tenant, budget.id, member),
            amounts_key=self.keys.reservation_amounts(tenant, budget.id, member),
            counter_key=self.keys.spent(tenant, budget.id, member),
            window_start_ms=window.start_ms, bucket_start_ms=bucket.start_ms, bucket_end_ms=bucket.end_ms,
            window_end_ms=window.end_ms,
            counter_ttl_ms=max(window.end_ms - now_ms, 0) + (window.end_ms - window.start_ms) + 60_000,
        )
        if len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = made
        return made


def build_reserve(cache: SlotCache, tenant: str, matched: Sequence[tuple[Budget, str]], *, reservation_id: str,
                  now_ms: int, ttl_ms: int, usd_nanos: int, tokens: int) -> ReserveRequest:
    """The reservation of one call against every enforcing (block / degrade) budget it matches."""
    slots = []
    for budget, member in matched:
        if budget.action == "notify":
            continue
        t = cache.template(tenant, budget, member, now_ms)
        slots.append(Slot(budget=budget, member=member, amount=usd_nanos if budget.unit == "usd" else tokens,
                          reservations_key=t.reservations_key, amounts_key=t.amounts_key, counter_key=t.counter_key,
                          window_start_ms=t.window_start_ms, bucket_start_ms=t.bucket_start_ms,
                          window_end_ms=t.window_end_ms, counter_ttl_ms=t.counter_ttl_ms))
    return ReserveRequest(tenant, reservation_id, now_ms, now_ms + ttl_ms, decision_keys(cache.keys, tenant, matched),
                          tuple(slots))


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
                      retry_after_s=max(slot.window_end_ms - req.now_ms, 0) / 1000, budget_id=slot.budget.id)
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
