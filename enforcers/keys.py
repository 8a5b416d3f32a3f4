"""The Redis key layout. Every key carries the tenant as a hash tag (``{acme}``), so one tenant's keys share a
cluster slot and a Lua script may touch all of them. The tag is :func:`tenant_tag` (the tenant itself when valid),
budget ids hold no ``:``, and members are escaped (``budgets.model``), so distinct tuples never share a key.

| key | type | holds |
|---|---|---|
| ``{p}:{t}:budgets`` | hash | budget id → budget JSON (published by the worker or ``costplane budget``) |
| ``{p}:{t}:decision:{budget}:{member}`` | string | the stream's decision JSON, expiring at the window end |
| ``{p}:{t}:spent:{budget}:{member}`` | hash | the budget counter: bucket start (ms) → settled spend (buckets before
  the window are pruned), ``r<expiry>:<id>`` → amount per reservation holding budget (``z…`` → 0: holds nothing),
  ``_<window start>:<keep until>:<limit>`` → spent + open − limit (the state), ``_k`` → the state's name |

One key per budget member keeps a reservation at one ``HINCRBY`` and one ``HSET`` per budget inside the script; see
docs/enforcement.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from costplane.publisher.identifiers import tenant_tag


@dataclass(frozen=True, slots=True)
class KeyLayout:
    prefix: str = "cp"

    def _t(self, tenant: str) -> str:
        return f"{self.prefix}:{{{tenant_tag(tenant)}}}"

    def budgets(self, tenant: str) -> str:
        return f"{self._t(tenant)}:budgets"

    def decision(self, tenant: str, budget_id: str, member: str) -> str:
        return f"{self._t(tenant)}:decision:{budget_id}:{member}"

    def spent(self, tenant: str, budget_id: str, member: str) -> str:
        return f"{self._t(tenant)}:spent:{budget_id}:{member}"
