"""The guard's store on Redis Cluster: the same scripts and key layout, each call routed to its tenant's master.

Every key a script touches carries the tenant's hash tag (``keys.py``), so a reservation, a settle or a reconcile
is one script call on one node; redis-py's cluster client routes it by the first key and loads a script on a node
that has not seen it. What the single-node store's own transport buys (pipelined settles, no pool hooks) is given
up here: each call is one ordinary round trip through the cluster client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.cluster import RedisCluster

from costplane.budgets.model import Budget
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.plan import ReserveRequest, ReserveResult
from costplane.enforcers.scripts import SOURCES
from costplane.enforcers.store import NO_RETRY, parse_budgets, parse_reserve, reserve_args, settle_args


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisClusterBudgetStore:
    """:class:`~costplane.enforcers.store.RedisBudgetStore`'s guard and worker methods on a :class:`RedisCluster`."""

    def __init__(self, client: RedisCluster, keys: KeyLayout | None = None) -> None:
        self.client = client
        self.keys = keys or KeyLayout()
        self._reserve = client.register_script(SOURCES["reserve"])
        self._settle = client.register_script(SOURCES["settle"])

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "cp", timeout_s: float = 0.05) -> RedisClusterBudgetStore:
        client = RedisCluster.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=NO_RETRY)
        return cls(client, KeyLayout(prefix))

    # guard side
    def load_budgets(self, tenant: str) -> list[Budget]:
        return parse_budgets(tenant, self.client.hgetall(self.keys.budgets(tenant)))

    def read_decisions(self, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        return [_text(v) for v in self.client.mget(list(keys)) if v is not None]  # one tenant: one slot

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        keys, args = reserve_args(req)
        return parse_reserve(self._reserve(keys=keys, args=args))

    def settle(self, req: ReserveRequest, nanos: int, tokens: int, now_ms: int) -> bool:
        keys, args = settle_args(req, nanos, tokens, now_ms)
        return bool(self._settle(keys=keys, args=args))

    # worker side
    def publish_budgets(self, tenant: str, budgets: Sequence[Budget]) -> None:
        """Replace the tenant's live budget set atomically (one key: a MULTI on its node)."""
        key = self.keys.budgets(tenant)
        pipe: Any = self.client.pipeline(transaction=True)  # type: ignore[no-untyped-call]
        pipe.delete(key)
        if budgets:
            pipe.hset(key, mapping={b.id: b.to_json() for b in budgets})
        pipe.execute()

    def write_decision(self, tenant: str, budget_id: str, member: str, decision_json: str, expire_at_ms: int) -> None:
        self.client.set(self.keys.decision(tenant, budget_id, member), decision_json, pxat=expire_at_ms)

    def clear_decision(self, tenant: str, budget_id: str, member: str) -> None:
        self.client.delete(self.keys.decision(tenant, budget_id, member))

    def reconcile(
        self, tenant: str, budget_id: str, member: str, bucket_start_ms: int, authoritative: int, ttl_ms: int
    ) -> None:
        self.client.eval(
            SOURCES["reconcile"], 1, self.keys.spent(tenant, budget_id, member), bucket_start_ms, authoritative, ttl_ms
        )

    def ping(self) -> bool:
        return bool(self.client.ping())
