"""Where budgets, decisions, counters and reservations live: Redis (sync and asyncio), one round trip per call.

The worker side uses the same store to publish budgets, write and clear decisions, and reconcile counters to its
authoritative totals; the guard side reserves and settles. Both reserve and settle are single Lua scripts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from costplane.budgets.model import Budget
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.plan import RESERVED, ReserveRequest, ReserveResult
from costplane.enforcers.scripts import SOURCES
from costplane.enforcers.transport import Lanes
from costplane.logging import get_logger

log = get_logger("costplane.guard")

#: The guard's client gives up at once: the failure policy and the circuit breaker decide what happens next,
#: and redis-py's default (3 retries with backoff) would turn one dead Redis into seconds per call.
NO_RETRY = Retry(NoBackoff(), 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def reserve_args(req: ReserveRequest) -> tuple[list[str], list[Any]]:
    """Keys and arguments of the reserve script (the layout ``reserve.lua`` documents)."""
    keys: list[str] = [*req.decision_keys, *(slot.counter_key for slot in req.slots)]
    args: list[Any] = [req.field, req.now_ms, req.nanos, req.tokens]
    for slot in req.slots:
        args += [slot.reserve_code, slot.state_field]
    return keys, args


#: The values a call adds to its plan's encoded commands, each in one formatting step.
_FOUR = b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n%s"
_SIX = b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n%s"


def reserve_wire(req: ReserveRequest) -> bytes:
    """The whole ``EVALSHA`` of :func:`reserve_args`: the plan's encoded head and tail around four values."""
    plan = req.plan
    field, now, n, tk = req.field.encode(), b"%d" % req.now_ms, b"%d" % req.nanos, b"%d" % req.tokens
    return _FOUR % (
        plan.wire_reserve_head,
        len(field),
        field,
        len(now),
        now,
        len(n),
        n,
        len(tk),
        tk,
        plan.wire_reserve_tail,
    )


def settle_args(req: ReserveRequest, nanos: int, tokens: int, now_ms: int) -> tuple[list[str], list[Any]]:
    """Keys and arguments of the settle script (the layout ``settle.lua`` documents)."""
    keys: list[str] = [slot.counter_key for slot in req.slots]
    args: list[Any] = [req.field, now_ms, nanos, tokens, nanos - req.nanos, tokens - req.tokens]
    for slot in req.slots:
        args += [slot.reserve_code.lower(), slot.state_field, slot.bucket_start_ms]
    return keys, args


def settle_wire(req: ReserveRequest, nanos: int, tokens: int, now_ms: int) -> bytes:
    """The whole ``EVALSHA`` of :func:`settle_args`, pre-encoded like :func:`reserve_wire`."""
    plan = req.plan
    field, now, n, tk = req.field.encode(), b"%d" % now_ms, b"%d" % nanos, b"%d" % tokens
    mn, mt = b"%d" % (nanos - req.nanos), b"%d" % (tokens - req.tokens)
    return _SIX % (
        plan.wire_settle_head,
        len(field),
        field,
        len(now),
        now,
        len(n),
        n,
        len(tk),
        tk,
        len(mn),
        mn,
        len(mt),
        mt,
        plan.wire_settle_tail,
    )


#: A command written to one of the guard's connections whose reply has not been read yet: (lane, command).
Pending = tuple[Any, bytes]


def parse_budgets(tenant: str, raw: dict[Any, Any]) -> list[Budget]:
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


class RedisBudgetStore:
    """Synchronous Redis store (redis-py). Errors propagate; the guard's failure policy decides what they mean."""

    def __init__(self, client: redis.Redis, keys: KeyLayout | None = None) -> None:
        self.client = client
        self.keys = keys or KeyLayout()
        # A pipeline (the worker batches decisions through one) has no connections of its own to copy.
        self._pipeline = isinstance(client, redis.client.Pipeline)
        self._lanes: Lanes | None = None  # made on the first reserve or settle: the worker's stores never need one
        self._lanes_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "cp", timeout_s: float = 0.05) -> RedisBudgetStore:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=NO_RETRY)
        return cls(client, KeyLayout(prefix))

    def _transport(self) -> Lanes:
        lanes = self._lanes
        if lanes is None:
            if self._pipeline:
                raise TypeError("reserve/settle need a client, not a pipeline")
            with self._lanes_lock:  # two threads' first calls must share one set of connections
                if self._lanes is None:
                    self._lanes = Lanes(self.client.connection_pool)
                lanes = self._lanes
        return lanes

    def send(self, packed: bytes) -> Pending:
        """Write one pre-encoded command on one of the guard's connections; :meth:`receive` reads its reply.

        Split so the guard can do its own bookkeeping while Redis runs the script, instead of after the reply.
        """
        return self._transport().send(packed), packed

    def receive(self, pending: Pending) -> Any:
        """The reply to :meth:`send`'s command (``NOSCRIPT``: the guard's scripts are loaded, the command resent)."""
        lane, packed = pending
        return self._transport().receive(lane, packed)

    def roundtrip(self, packed: bytes) -> Any:
        """One pre-encoded command and its reply: the guard's whole transport (``transport.py``)."""
        return self._transport().roundtrip(packed)

    def flush(self) -> None:
        """Wait for the replies of every settle sent so far (:meth:`settle_later`)."""
        if self._lanes is not None:
            self._lanes.flush()

    # guard side
    def load_budgets(self, tenant: str) -> list[Budget]:
        return parse_budgets(tenant, self.client.hgetall(self.keys.budgets(tenant)))

    def read_decisions(self, keys: Sequence[str]) -> list[str]:
        if not keys:
            return []
        return [_text(v) for v in self.client.mget(list(keys)) if v is not None]

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        return parse_reserve(self.roundtrip(reserve_wire(req)))

    def reserve_begin(self, req: ReserveRequest) -> Pending:
        """:meth:`reserve` in two halves: this one sends, :meth:`reserve_end` reads the answer."""
        return self.send(reserve_wire(req))

    def reserve_end(self, pending: Pending) -> ReserveResult:
        return parse_reserve(self.receive(pending))

    def settle(self, req: ReserveRequest, nanos: int, tokens: int, now_ms: int) -> bool:
        """Settle and wait: True when settled now, False when there was nothing to settle."""
        return bool(self.roundtrip(settle_wire(req, nanos, tokens, now_ms)))

    def settle_later(self, req: ReserveRequest, nanos: int, tokens: int, now_ms: int) -> None:
        """Settle without waiting for the reply (the guard's settle): see ``transport.py``."""
        self._transport().send_later(settle_wire(req, nanos, tokens, now_ms))

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

    def reconcile(
        self, tenant: str, budget_id: str, member: str, bucket_start_ms: int, authoritative: int, ttl_ms: int
    ) -> None:
        """Set a counter bucket to the worker's exact total (open reservations are untouched).

        One script, so the guard's running spent total moves with the bucket. Sent as ``EVAL`` with its source:
        on a pipeline store (the worker's batch) it is queued with the other commands, and a server that lost
        its script cache (restart, ``SCRIPT FLUSH``) can never fail the batch with ``NOSCRIPT``.
        """
        self.client.eval(
            SOURCES["reconcile"], 1, self.keys.spent(tenant, budget_id, member), bucket_start_ms, authoritative, ttl_ms
        )

    def ping(self) -> bool:
        return bool(self.client.ping())


class AsyncRedisBudgetStore:
    """The same store for asyncio apps (redis.asyncio), same scripts and key layout."""

    def __init__(self, client: aredis.Redis, keys: KeyLayout | None = None) -> None:
        self.client = client
        self.keys = keys or KeyLayout()
        self._reserve = client.register_script(SOURCES["reserve"])
        self._settle = client.register_script(SOURCES["settle"])

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "cp", timeout_s: float = 0.05) -> AsyncRedisBudgetStore:
        client = aredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=AsyncRetry(NoBackoff(), 0)
        )
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

    async def settle(self, req: ReserveRequest, nanos: int, tokens: int, now_ms: int) -> bool:
        keys, args = settle_args(req, nanos, tokens, now_ms)
        return bool(await self._settle(keys=keys, args=args))
