"""The Redis key layout. Every key carries the tenant as a hash tag (``{acme}``), so one tenant's keys share a
cluster slot and a Lua script may touch all of them.

| key | type | holds |
|---|---|---|
| ``{p}:{t}:budgets`` | hash | budget id → budget JSON (published by the worker or ``costplane budget``) |
| ``{p}:{t}:decision:{budget}:{member}`` | string | the stream's decision JSON, expiring at the window end |
| ``{p}:{t}:spent:{budget}:{member}`` | hash | bucket start (ms) → settled spend; buckets before the window are pruned |
| ``{p}:{t}:rsv:{budget}:{member}`` | zset | open reservation ids scored by expiry (ms) |
| ``{p}:{t}:rsvamt:{budget}:{member}`` | hash | open reservation id → amount |
| ``{p}:{t}:settled:{reservation}`` | string | idempotency marker of a settled reservation |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyLayout:
    prefix: str = "cp"

    def _t(self, tenant: str) -> str:
        return f"{self.prefix}:{{{tenant}}}"

    def budgets(self, tenant: str) -> str:
        return f"{self._t(tenant)}:budgets"

    def decision(self, tenant: str, budget_id: str, member: str) -> str:
        return f"{self._t(tenant)}:decision:{budget_id}:{member}"

    def spent(self, tenant: str, budget_id: str, member: str) -> str:
        return f"{self._t(tenant)}:spent:{budget_id}:{member}"

    def reservations(self, tenant: str, budget_id: str, member: str) -> str:
        return f"{self._t(tenant)}:rsv:{budget_id}:{member}"

    def reservation_amounts(self, tenant: str, budget_id: str, member: str) -> str:
        return f"{self._t(tenant)}:rsvamt:{budget_id}:{member}"

    def settled(self, tenant: str, reservation_id: str) -> str:
        return f"{self._t(tenant)}:settled:{reservation_id}"
