"""Where budgets, decisions, counters and reservations live: Redis (sync and asyncio), one round trip per call.

The worker side uses the same store to publish budgets, write and clear decisions, and reconcile counters to its
authoritative totals; the guard side reserves and settles. Both reserve and settle are single Lua scripts.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from costplane.budgets.model import Budget
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.plan import ReserveRequest, ReserveResult
from costplane.enforcers.resp import bulk, bulks, evalsha
from costplane.logging import get_logger

log = get_logger("costplane.guard")

#: The guard's client gives up at once: the failure policy and the circuit breaker decide what happens next,
#: and redis-py's default (3 retries with backoff) would turn one dead Redis into seconds per call.
NO_RETRY = Retry(NoBackoff(), 0)
SCRIPT_LOAD = b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n"


@functools.cache
def _lua(name: str) -> str:
    return resources.files("costplane.enforcers").joinpath(f"lua/{name}.lua").read_text()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _sha(source: str) -> bytes:
    return hashlib.sha1(source.encode()).hexdigest().encode()


def reserve_args(req: ReserveRequest) -> tuple[list[str], list[Any]]:
    keys: list[str] = list(req.decision_keys)
    args: list[Any] = [req.now_ms, req.field, req.expiry_ms, len(req.slots), len(req.decision_keys)]
    for slot, amount in zip(req.slots, req.amounts, strict=True):
        keys.append(slot.counter_key)
        args += [amount, slot.budget.limit, slot.mode, slot.window_start_ms]
    return keys, args


def reserve_wire(req: ReserveRequest) -> tuple[int, int, bytes]:
    """(numkeys, parts, encoded keys and arguments) of the reserve script: :func:`reserve_args`, pre-encoded."""
    plan = req.plan
    nb, nd = len(plan.slots), len(plan.decision_keys)
    numkeys = nd + nb
    body = b"".join((plan.wire_keys, bulks((req.now_ms, req.field, req.expiry_ms, nb, nd)),
                     *(bulk(amount) + slot.wire_reserve for slot, amount in zip(plan.slots, req.amounts,
                                                                                 strict=True))))
    return numkeys, numkeys + 5 + 4 * nb, body


def settle_args(req: ReserveRequest, amounts: Sequence[int], now_ms: int) -> tuple[list[str], list[Any]]:
    keys: list[str] = [slot.counter_key for slot in req.slots]
    args: list[Any] = [req.field, now_ms, len(req.slots)]
    for slot, amount in zip(req.slots, amounts, strict=True):
        args += [amount, slot.counter_ttl_ms, slot.bucket_start_ms]
    return keys, args


def settle_wire(req: ReserveRequest, amounts: Sequence[int], now_ms: int) -> tuple[int, int, bytes]:
    """(numkeys, parts, encoded keys and arguments) of the settle script: :func:`settle_args`, pre-encoded."""
    slots = req.slots
    nb = len(slots)
    body = b"".join((*(s.wire_keys for s in slots), bulks((req.field, now_ms, nb)),
                     *(bulk(amount) + s.wire_settle for s, amount in zip(slots, amounts, strict=True))))
    return nb, nb + 3 + 3 * nb, body


def parse_budgets(tenant: str, raw: dict[Any, Any]) -> list[Budget]:
    """The tenant's published budgets; one that does not parse is skipped and logged, never raised into the app."""
    out = []
    for budget_id, text in raw.items():
        try:
            out.append(Budget.from_json(text))
        except ValueError as exc:
            log.error("unreadable budget skipped", tenant=tenant, budget=_text(budget_id), error=str(exc)[:200])
    return out


def parse_reserve(raw: Sequence[Any]) -> ReserveResult:
    head = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
    if head == "decisions":
        return ReserveResult(decisions=[r.decode() if isinstance(r, bytes) else str(r) for r in raw[1:]])
    if head == "exhausted":
        return ReserveResult(exhausted=int(raw[1]) - 1, held=int(raw[2]) + int(raw[3]))
    tail = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
    return ReserveResult(degraded=[int(x) - 1 for x in tail.split(",") if x])


class RedisBudgetStore:
    """Synchronous Redis store (redis-py). Errors propagate; the guard's failure policy decides what they mean."""

    def __init__(self, client: redis.Redis, keys: KeyLayout | None = None) -> None:
        self.client = client
        self.keys = keys or KeyLayout()
        self._sources = {"reserve": _lua("reserve"), "settle": _lua("settle")}
        self._shas = {name: _sha(src) for name, src in self._sources.items()}
        # A pipeline (the worker batches decisions through one) has no pool to borrow a connection from.
        self._pool = None if isinstance(client, redis.client.Pipeline) else client.connection_pool

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "cp", timeout_s: float = 0.05) -> RedisBudgetStore:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                      retry=NO_RETRY)
        return cls(client, KeyLayout(prefix))

    def _eval(self, name: str, wire: tuple[int, int, bytes]) -> Any:
        """EVALSHA as one pre-encoded write and one read on a pooled connection (loads the script on NOSCRIPT)."""
        if self._pool is None:
            raise TypeError("reserve/settle need a client, not a pipeline")
        packed = evalsha(self._shas[name], *wire)
        pool = self._pool
        conn: Any = pool.get_connection()
        try:
            try:
                conn.send_packed_command([packed], check_health=False)
                return conn.read_response()
            except NoScriptError:
                conn.send_packed_command([SCRIPT_LOAD + bulk(self._sources[name])], check_health=False)
                conn.read_response()
                conn.send_packed_command([packed], check_health=False)
                return conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            conn.disconnect()  # a late reply must never be read as the next call's answer
            raise
        finally:
            pool.release(conn)

    # guard side
    def load_budgets(self, tenant: str) -> list[Budget]:
        return parse_budgets(tenant, self.client.hgetall(self.keys.budgets(tenant)))

    def read_decisions(self, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        return [_text(v) for v in self.client.mget(list(keys)) if v is not None]

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        return parse_reserve(self._eval("reserve", reserve_wire(req)))

    def settle(self, req: ReserveRequest, amounts: Sequence[int], now_ms: int) -> bool:
        return bool(self._eval("settle", settle_wire(req, amounts, now_ms)))

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
        """Set a counter bucket to the worker's exact total (open reservations are untouched).

        One script, so the guard's running spent total moves with the bucket. Sent as ``EVAL`` with its source:
        on a pipeline store (the worker's batch) it is queued with the other commands, and a server that lost
        its script cache (restart, ``SCRIPT FLUSH``) can never fail the batch with ``NOSCRIPT``.
        """
        self.client.eval(_lua("reconcile"), 1, self.keys.spent(tenant, budget_id, member), bucket_start_ms,
                         authoritative, ttl_ms)

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
        client = aredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                       retry=AsyncRetry(NoBackoff(), 0))
        return cls(client, KeyLayout(prefix))

    async def load_budgets(self, tenant: str) -> list[Budget]:
        return parse_budgets(tenant, await self.client.hgetall(self.keys.budgets(tenant)))

    async def read_decisions(self, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        return [_text(v) for v in await self.client.mget(list(keys)) if v is not None]

    async def reserve(self, req: ReserveRequest) -> ReserveResult:
        keys, args = reserve_args(req)
        return parse_reserve(await self._reserve(keys=keys, args=args))

    async def settle(self, req: ReserveRequest, amounts: Sequence[int], now_ms: int) -> bool:
        keys, args = settle_args(req, amounts, now_ms)
        return bool(await self._settle(keys=keys, args=args))
