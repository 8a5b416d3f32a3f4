"""Where budgets, decisions, counters and reservations live: Redis (sync and asyncio), one round trip per call.

The worker side uses the same store to publish budgets, write and clear decisions, and reconcile counters to its
authoritative totals; the guard side reserves and settles. Both reserve and settle are single Lua scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aredis

from costplane.budgets.model import Budget
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.plan import ReserveRequest, ReserveResult, Slot

SETTLED_MARKER_TTL_MS = 24 * 3_600_000


def _lua(name: str) -> str:
    return resources.files("costplane.enforcers").joinpath(f"lua/{name}.lua").read_text()


def reserve_args(req: ReserveRequest) -> tuple[list[str], list[Any]]:
    keys: list[str] = list(req.decision_keys)
    args: list[Any] = [req.now_ms, req.reservation_id, req.expiry_ms, len(req.slots), len(req.decision_keys)]
    for slot in req.slots:
        keys += [slot.reservations_key, slot.amounts_key, slot.counter_key]
        args += [slot.budget.limit, slot.amount, slot.mode, slot.window_start_ms]
    return keys, args


def settle_args(keys_layout: KeyLayout, tenant: str, reservation_id: str, slots: Sequence[Slot],
                amounts: Sequence[int]) -> tuple[list[str], list[Any]]:
    keys: list[str] = [keys_layout.settled(tenant, reservation_id)]
    args: list[Any] = [reservation_id, SETTLED_MARKER_TTL_MS, len(slots)]
    for slot, amount in zip(slots, amounts, strict=True):
        keys += [slot.reservations_key, slot.amounts_key, slot.counter_key]
        args += [amount, slot.counter_ttl_ms, slot.bucket_start_ms]
    return keys, args


def parse_reserve(raw: Sequence[Any]) -> ReserveResult:
    head = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
    if head == "decisions":
        return ReserveResult(decisions=[r.decode() if isinstance(r, bytes) else str(r) for r in raw[1:]])
    if head == "exhausted":
        return ReserveResult(exhausted=int(raw[1]) - 1)
    tail = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
    return ReserveResult(degraded=[int(x) - 1 for x in tail.split(",") if x])


class RedisBudgetStore:
    """Synchronous Redis store (redis-py). Errors propagate; the guard's failure policy decides what they mean."""

    def __init__(self, client: redis.Redis, keys: KeyLayout | None = None) -> None:
        self.client = client
        self.keys = keys or KeyLayout()
        self._reserve = client.register_script(_lua("reserve"))
        self._settle = client.register_script(_lua("settle"))

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "cp", timeout_s: float = 0.05) -> RedisBudgetStore:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                      retry_on_timeout=False)
        return cls(client, KeyLayout(prefix))

    # guard side
    def load_budgets(self, tenant: str) -> list[Budget]:
        raw = self.client.hgetall(self.keys.budgets(tenant))
        return [Budget.from_json(v) for v in raw.values()]

    def read_decisions(self, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        return [v.decode() for v in self.client.mget(list(keys)) if v is not None]

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        keys, args = reserve_args(req)
        return parse_reserve(self._reserve(keys=keys, args=args))

    def settle(self, tenant: str, reservation_id: str, slots: Sequence[Slot], amounts: Sequence[int]) -> bool:
        keys, args = settle_args(self.keys, tenant, reservation_id, slots, amounts)
        return bool(self._settle(keys=keys, args=args))

    # worker side
    def publish_budgets(self, tenant: str, budgets: Sequence[Budget]) -> None:
        """Replace the tenant's live budget set (what the guard matches calls against)."""
        key = self.keys.budgets(tenant)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key)
        if budgets:
            pipe.hset(key, mapping={b.id: b.to_json() for b in budgets})
        pipe.execute()

    def write_decision(self, tenant: str, budget_id: str, member: str, decision_json: str, expire_at_ms: int) -> None:
        self.client.set(self.keys.decision(tenant, budget_id, member), decision_json, pxat=expire_at_ms)

    def clear_decision(self, tenant: str, budget_id: str, member: str) -> None:
        self.client.delete(self.keys.decision(tenant, budget_id, member))

    def reconcile(self, tenant: str, budget_id: str, member: str, bucket_start_ms: int, authoritative: int,
                  ttl_ms: int) -> None:
        """Set a counter bucket to the worker's exact total (open reservations are untouched)."""
        key = self.keys.spent(tenant, budget_id, member)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, str(bucket_start_ms), authoritative)
        pipe.pexpire(key, ttl_ms)
        pipe.execute()

    def ping(self) -> bool:
        return bool(self.client.ping())


class AsyncRedisBudgetStore:
    """The same store for asyncio apps (redis.asyncio), same scripts and key layout."""

    def __init__(self, client: aredis.Redis, keys: KeyLayout | None = None) -> None:
        self.client = client
        self.keys = keys or KeyLayout()
        self._reserve = client.register_script(_lua("reserve"))
        self._settle = client.register_script(_lua("settle"))

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "cp", timeout_s: float = 0.05) -> AsyncRedisBudgetStore:
        client = aredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(client, KeyLayout(prefix))

    async def load_budgets(self, tenant: str) -> list[Budget]:
        raw = await self.client.hgetall(self.keys.budgets(tenant))
        return [Budget.from_json(v) for v in raw.values()]

    async def read_decisions(self, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        return [v.decode() for v in await self.client.mget(list(keys)) if v is not None]

    async def reserve(self, req: ReserveRequest) -> ReserveResult:
        keys, args = reserve_args(req)
        return parse_reserve(await self._reserve(keys=keys, args=args))

    async def settle(self, tenant: str, reservation_id: str, slots: Sequence[Slot], amounts: Sequence[int]) -> bool:
        keys, args = settle_args(self.keys, tenant, reservation_id, slots, amounts)
        return bool(await self._settle(keys=keys, args=args))
