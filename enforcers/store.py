"""Where budgets, decisions, counters and reservations live: the :class:`BudgetStore` protocol and its Redis store.

The worker side uses a store to publish budgets, write and clear decisions, and reconcile counters to its
authoritative totals; the guard side reserves and settles. Both reserve and settle are single Lua scripts, sent
through redis-py's own command path (``Script`` objects: ``EVALSHA``, and the source once on ``NOSCRIPT``). One
class serves a single Redis and Redis Cluster alike: every key a script touches carries the tenant's hash tag
(``keys.py``), so each call is one script on one node, and :class:`~redis.cluster.RedisCluster` routes it there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import AsyncScript, Script
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from costplane.budgets.model import Budget
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.plan import RESERVED, ReserveRequest, ReserveResult
from costplane.enforcers.scripts import SOURCES
from costplane.logging import get_logger

log = get_logger("costplane.guard")

#: The guard's client gives up at once: the failure policy and the circuit breaker decide what happens next,
#: and redis-py's default (3 retries with backoff) would turn one dead Redis into seconds per call.
NO_RETRY = Retry(NoBackoff(), 0)

#: What a Redis client raises when Redis is unreachable or refuses: a cluster client's own failures (no
#: reachable node, a slot no node serves) are not ``RedisError``s, so every caller that waits out or answers for
#: an unavailable Redis catches this one tuple.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)
#: A client of one Redis or of a Redis Cluster.
Client = redis.Redis | RedisCluster
#: What a Redis store can be built on: a client, or a pipeline (the worker's batched writes).
SyncClient = Client | redis.client.Pipeline


def redis_client(url: str, *, timeout_s: float, cluster: bool = False, retry: bool = False) -> Client:
    """The one place a synchronous client is built from a URL: :class:`RedisCluster` when ``cluster`` (the URL
    names one seed node), else :class:`redis.Redis`. Without ``retry`` it gives up at once (:data:`NO_RETRY`)."""
    opts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if not retry:
        opts["retry"] = NO_RETRY
    return RedisCluster.from_url(url, **opts) if cluster else redis.Redis.from_url(url, **opts)


def async_redis_client(url: str, *, timeout_s: float, cluster: bool = False) -> aredis.Redis | aredis.RedisCluster:
    """:func:`redis_client` for asyncio (the guard's kind: it gives up at once)."""
    opts: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": AsyncRetry(NoBackoff(), 0),
    }
    return aredis.RedisCluster.from_url(url, **opts) if cluster else aredis.Redis.from_url(url, **opts)


class BudgetStore(Protocol):
    """What the synchronous guard and the worker need from a store (Redis, Redis Cluster, or process memory)."""

    @property
    def keys(self) -> KeyLayout: ...

    # guard side
    def load_budgets(self, tenant: str) -> list[Budget]: ...

    def read_decisions(self, keys: Sequence[str]) -> list[str]: ...

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        """All or nothing across the request's budgets, after reading its scope's decisions (``reserve.lua``)."""
        ...

    def settle(self, req: ReserveRequest, nanos: int, tokens: int, now_ms: int) -> bool:
        """Charge what the call cost, once: True when settled now, False when there was nothing to settle."""
        ...

    # worker side
    def publish_budgets(self, tenant: str, budgets: Sequence[Budget]) -> None: ...

    def write_decision(
        self, tenant: str, budget_id: str, member: str, decision_json: str, expire_at_ms: int
    ) -> None: ...

    def clear_decision(self, tenant: str, budget_id: str, member: str) -> None: ...

    def reconcile(
        self, tenant: str, budget_id: str, member: str, bucket_start_ms: int, authoritative: int, ttl_ms: int
    ) -> None: ...


class AsyncBudgetStore(Protocol):
    """The guard side of :class:`BudgetStore` for asyncio apps (each method awaited)."""

    @property
    def keys(self) -> KeyLayout: ...

    async def load_budgets(self, tenant: str) -> list[Budget]: ...

    async def read_decisions(self, keys: Sequence[str]) -> list[str]: ...

    async def reserve(self, req: ReserveRequest) -> ReserveResult: ...

    async def settle(self, req: ReserveRequest, nanos: int, tokens: int, now_ms: int) -> bool: ...


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def reserve_args(req: ReserveRequest) -> tuple[tuple[str, ...], list[str | int]]:
    """Keys and arguments of the reserve script (the layout ``reserve.lua`` documents)."""
    plan = req.plan
    return plan.reserve_keys, [req.field, req.now_ms, req.nanos, req.tokens, *plan.reserve_tail]


def settle_args(req: ReserveRequest, nanos: int, tokens: int, now_ms: int) -> tuple[tuple[str, ...], list[str | int]]:
    """Keys and arguments of the settle script (the layout ``settle.lua`` documents)."""
    plan = req.plan
    moved = [nanos - req.nanos, tokens - req.tokens]
    return plan.settle_keys, [req.field, now_ms, nanos, tokens, *moved, *plan.settle_tail]


def parse_budgets(tenant: str, raw: Mapping[Any, Any]) -> list[Budget]:
    """The tenant's published budgets; one that does not parse is skipped and logged, never raised into the app."""
    out = []
    for budget_id, text in raw.items():
        try:
            out.append(Budget.from_json(text))
        except ValueError as exc:
            log.error("unreadable budget skipped", tenant=tenant, budget=_text(budget_id), error=str(exc)[:200])
    return out


def parse_reserve(raw: Any) -> ReserveResult:
    """The reserve script's reply: 0, a bit mask of degraded budgets, ``['d', json…]`` or ``['x', index, held]``."""
    if raw == 0:  # the common answer: reserved everywhere
        return RESERVED
    if isinstance(raw, int):
        return ReserveResult(degraded=tuple(i for i in range(raw.bit_length()) if raw >> i & 1))
    if raw[0] == b"d":
        return ReserveResult(decisions=tuple(r.decode() if isinstance(r, bytes) else str(r) for r in raw[1:]))
    return ReserveResult(exhausted=int(raw[1]) - 1, held=int(raw[2]))


_ScriptT = TypeVar("_ScriptT", Script, AsyncScript)
_ScriptT_co = TypeVar("_ScriptT_co", covariant=True)


class _ScriptHost(Protocol[_ScriptT_co]):
    """A redis-py client (sync, asyncio, cluster or pipeline): all a store needs to register its scripts."""

    def register_script(self, script: str, /) -> _ScriptT_co: ...


class _ScriptedStore(Generic[_ScriptT]):
    """What the sync and asyncio Redis stores hold alike: the key layout and the guard's two scripts, registered
    once on the client (``Script`` objects send ``EVALSHA``, and the source once on ``NOSCRIPT``)."""

    def __init__(self, client: _ScriptHost[_ScriptT], keys: KeyLayout | None) -> None:
        self._keys = keys or KeyLayout()
        self._reserve: _ScriptT = client.register_script(SOURCES["reserve"])
        self._settle: _ScriptT = client.register_script(SOURCES["settle"])

    @property
    def keys(self) -> KeyLayout:
        return self._keys


class RedisBudgetStore(_ScriptedStore[Script]):
    """The synchronous Redis store, on one server or a cluster (redis-py). Errors propagate; the guard's failure
    policy decides what they mean."""

    def __init__(self, client: SyncClient, keys: KeyLayout | None = None) -> None:
        super().__init__(client, keys)
        self.client = client

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "cp", timeout_s: float = 0.05, cluster: bool = False
    ) -> RedisBudgetStore:
        """A store on ``url``; with ``cluster`` the URL names one seed node of a Redis Cluster."""
        return cls(redis_client(url, timeout_s=timeout_s, cluster=cluster), KeyLayout(prefix))

    # guard side
    def load_budgets(self, tenant: str) -> list[Budget]:
        return parse_budgets(tenant, self.client.hgetall(self.keys.budgets(tenant)))

    def read_decisions(self, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        return [_text(v) for v in self.client.mget(list(keys)) if v is not None]  # one tenant: one slot

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        keys, args = reserve_args(req)
        return parse_reserve(self._reserve(keys, args))

    def settle(self, req: ReserveRequest, nanos: int, tokens: int, now_ms: int) -> bool:
        keys, args = settle_args(req, nanos, tokens, now_ms)
        return bool(self._settle(keys, args))

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
        """Set a counter bucket to the worker's exact total (open reservations are untouched).

        One script, so the guard's running spent total moves with the bucket. Sent as ``EVAL`` with its source:
        on a pipeline store (the worker's batch) it is queued with the other commands, and a server that lost
        its script cache (restart, ``SCRIPT FLUSH``) can never fail the batch with ``NOSCRIPT``.
        """
        key = self.keys.spent(tenant, budget_id, member)
        self.client.eval(SOURCES["reconcile"], 1, key, bucket_start_ms, authoritative, ttl_ms)

    def ping(self) -> bool:
        return bool(self.client.ping())


class AsyncRedisBudgetStore(_ScriptedStore[AsyncScript]):
    """The same store for asyncio apps (redis.asyncio, one server or a cluster), same scripts and key layout."""

    def __init__(self, client: aredis.Redis | aredis.RedisCluster, keys: KeyLayout | None = None) -> None:
        super().__init__(client, keys)
        self.client = client

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "cp", timeout_s: float = 0.05, cluster: bool = False
    ) -> AsyncRedisBudgetStore:
        """A store on ``url``; with ``cluster`` the URL names one seed node of a Redis Cluster."""
        return cls(async_redis_client(url, timeout_s=timeout_s, cluster=cluster), KeyLayout(prefix))

    async def load_budgets(self, tenant: str) -> list[Budget]:
        return parse_budgets(tenant, await self.client.hgetall(self.keys.budgets(tenant)))

    async def read_decisions(self, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        return [_text(v) for v in await self.client.mget(list(keys)) if v is not None]

    async def reserve(self, req: ReserveRequest) -> ReserveResult:
        keys, args = reserve_args(req)
        return parse_reserve(await self._reserve(keys, args))

    async def settle(self, req: ReserveRequest, nanos: int, tokens: int, now_ms: int) -> bool:
        keys, args = settle_args(req, nanos, tokens, now_ms)
        return bool(await self._settle(keys, args))


if TYPE_CHECKING:  # mypy proves the Redis stores implement the protocols the guards take
    _SYNC: type[BudgetStore] = RedisBudgetStore
    _ASYNC: type[AsyncBudgetStore] = AsyncRedisBudgetStore
