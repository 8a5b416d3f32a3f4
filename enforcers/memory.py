"""``InMemoryBudgetStore``: the Redis store's behaviour in process memory, for apps' unit tests.

Same planning, same all-or-nothing reservation, same expiry and idempotent settle — checked by the shared contract
suite that runs against both stores. Like the Redis scripts, a reservation's record is what makes its settle
count once: an expired one stops counting but keeps its record for a day, so a late settle still charges.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from costplane.budgets.model import Budget
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.plan import BLOCK, RESERVED, USD, ReserveRequest, ReserveResult

if TYPE_CHECKING:
    from costplane.enforcers.store import BudgetStore

DAY_MS = 86_400_000  # how long the record of an expired reservation waits for a late settle


class InMemoryBudgetStore:
    """Thread-safe dict-backed store; ``clock`` (epoch ms) drives key expiry."""

    def __init__(self, keys: KeyLayout | None = None, clock: Callable[[], int] | None = None) -> None:
        import time

        self.keys = keys or KeyLayout()
        self._clock = clock or (lambda: int(time.time() * 1000))
        self._lock = threading.Lock()
        self._values: dict[str, tuple[str, int | None]] = {}  # key -> (value, expire_at_ms)
        self._reservations: dict[str, dict[str, tuple[int, int]]] = {}  # counter key -> id -> (expiry, amount)
        self._budgets: dict[str, dict[str, Budget]] = {}
        self._counters: dict[str, dict[int, int]] = {}  # counter key -> bucket start -> spent

    def _get(self, key: str) -> str | None:
        item = self._values.get(key)
        if item is None:
            return None
        value, expire_at = item
        if expire_at is not None and expire_at <= self._clock():
            del self._values[key]
            return None
        return value

    def load_budgets(self, tenant: str) -> list[Budget]:
        with self._lock:
            return list(self._budgets.get(tenant, {}).values())

    def publish_budgets(self, tenant: str, budgets: Sequence[Budget]) -> None:
        with self._lock:
            self._budgets[tenant] = {b.id: b for b in budgets}

    def read_decisions(self, keys: Sequence[str]) -> list[str]:
        with self._lock:
            return [v for v in (self._get(k) for k in keys) if v is not None]

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        with self._lock:
            decisions = [v for v in (self._get(k) for k in req.decision_keys) if v is not None]
            if decisions:
                return ReserveResult(decisions=tuple(decisions))
            grants = []
            degraded = []
            for index, (slot, amount) in enumerate(zip(req.slots, req.amounts, strict=True)):
                records = self._reservations.setdefault(slot.counter_key, {})
                for rid in [r for r, (exp, _a) in records.items() if exp + DAY_MS <= req.now_ms]:
                    del records[rid]
                held = sum(a for e, a in records.values() if e > req.now_ms)
                buckets = self._counters.setdefault(slot.counter_key, {})
                for start in [s for s in buckets if s < slot.window_start_ms]:
                    del buckets[start]
                spent = sum(buckets.values())
                if spent + held + amount > slot.budget.limit:
                    if slot.mode == BLOCK:
                        return ReserveResult(exhausted=index, held=spent + held)
                    degraded.append(index)
                    amount = 0  # holds nothing, but its record makes the settle charge this budget too
                grants.append((slot, amount))
            for slot, amount in grants:
                self._reservations[slot.counter_key][req.reservation_id] = (req.expiry_ms, amount)
            return ReserveResult(degraded=tuple(degraded)) if degraded else RESERVED

    def settle(self, req: ReserveRequest, nanos: int, tokens: int, now_ms: int | None = None) -> bool:
        """Charge each budget that holds the reservation's record, once (``now_ms``: the Redis store's clock)."""
        with self._lock:
            settled = False
            for slot in req.slots:
                amount = nanos if slot.unit == USD else tokens
                if self._reservations.get(slot.counter_key, {}).pop(req.reservation_id, None) is None:
                    continue
                settled = True
                if amount > 0:
                    buckets = self._counters.setdefault(slot.counter_key, {})
                    buckets[slot.bucket_start_ms] = buckets.get(slot.bucket_start_ms, 0) + amount
            return settled

    def write_decision(self, tenant: str, budget_id: str, member: str, decision_json: str, expire_at_ms: int) -> None:
        with self._lock:
            self._values[self.keys.decision(tenant, budget_id, member)] = (decision_json, expire_at_ms)

    def clear_decision(self, tenant: str, budget_id: str, member: str) -> None:
        with self._lock:
            self._values.pop(self.keys.decision(tenant, budget_id, member), None)

    def reconcile(
        self, tenant: str, budget_id: str, member: str, bucket_start_ms: int, authoritative: int, ttl_ms: int
    ) -> None:
        with self._lock:
            self._counters.setdefault(self.keys.spent(tenant, budget_id, member), {})[bucket_start_ms] = authoritative


if TYPE_CHECKING:  # mypy proves the in-memory store is a BudgetStore, as the contract suite proves it behaves as one
    _CONFORMS: type[BudgetStore] = InMemoryBudgetStore
