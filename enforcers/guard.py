"""``BudgetGuard``: ask before an expensive model call; reserve its worst case; settle with what it really cost.

    guard = BudgetGuard.from_settings()
    scope = {"tenant": "acme", "feature": "search", "user": "u-17", "plan": "free"}
    with guard.reserve(scope, provider="openai", model="gpt-4o", prompt=prompt, max_tokens=512) as r:
        if not r.allowed:
            return fallback(r.answer.reason)          # Block: reason and retry_after
        response = client.chat.completions.create(model=r.model, ...)   # r.model honours Degrade
        r.settle(response)                            # releases the rest of the reservation

One Redis round trip reads the stream's decisions for the scope and reserves against every matching budget, all or
nothing (a Lua script). Redis trouble never raises into the app: the scope's failure policy answers (fail-open =
Allow, counted; fail-closed = Block with reason ``enforcement_unavailable``), and a circuit breaker makes a dead
Redis cost microseconds. A Block is cached locally for a short time so a blocked scope answers from memory.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

import redis
from prometheus_client import CollectorRegistry, Counter

from costplane.budgets.model import Budget
from costplane.enforcers.ids import ReservationIds
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.plan import (
    ALLOW,
    Answer,
    PlanCache,
    ReserveRequest,
    ReserveResult,
    answer_from_decisions,
    answer_from_reserve,
    scope_attrs,
)
from costplane.enforcers.policy import CircuitBreaker, FailurePolicy
from costplane.enforcers.store import REDIS_ERRORS, AsyncBudgetStore, BudgetStore
from costplane.logging import get_logger
from costplane.publisher.adapters import usage_from_response

log = get_logger("costplane.guard")
UNAVAILABLE = "enforcement_unavailable"
#: The failures of the guard's own I/O that the failure policy answers for (a cluster client's own errors, such as
#: a slot no reachable node serves, are not ``RedisError``s).
STORE_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, OSError, TimeoutError)


ScopeKey = tuple[tuple[str, str | None], ...]
S = TypeVar("S")  # the store type: sync for BudgetGuard, either for AsyncBudgetGuard


def scope_local(exc: BaseException) -> bool:
    """True for an error reply about the data one call touched (not about Redis as a whole)."""
    return isinstance(exc, redis.ResponseError) and not isinstance(
        exc,
        redis.exceptions.ReadOnlyError
        | redis.exceptions.OutOfMemoryError
        | redis.exceptions.BusyLoadingError
        | redis.exceptions.ClusterDownError,  # CLUSTERDOWN: the cluster as a whole, like a dead Redis
    )


@dataclass(slots=True)
class _Cached:
    answer: Answer
    until_ms: int


class GuardMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.answers = Counter("costplane_guard_answers_total", "Guard answers", ["kind"], registry=r)
        self.fail_open = Counter("costplane_guard_fail_open_total", "Calls allowed because Redis failed", registry=r)
        self.fail_closed = Counter(
            "costplane_guard_fail_closed_total", "Calls blocked because Redis failed", registry=r
        )
        self.cache_hits = Counter("costplane_guard_cache_hits_total", "Answers served from the local cache", registry=r)
        # Children resolved once: ``labels()`` costs more than the rest of a cached answer.
        self.by_kind = {kind: self.answers.labels(kind) for kind in ("allow", "block", "degrade")}


class GuardCore:
    """State and pure steps shared by the sync and async guards (budget cache, decision cache, policy)."""

    def __init__(
        self,
        *,
        policy: FailurePolicy | None = None,
        breaker: CircuitBreaker | None = None,
        reservation_ttl_s: float = 300.0,
        budget_cache_s: float = 5.0,
        decision_cache_s: float = 1.0,
        catalog: Any = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy or FailurePolicy()
        self.breaker = breaker or CircuitBreaker()
        self.reservation_ttl_ms = int(reservation_ttl_s * 1000)
        self.budget_cache_ms = int(budget_cache_s * 1000)
        self.decision_cache_ms = int(decision_cache_s * 1000)
        self.metrics = GuardMetrics(registry)
        self.clock = clock
        self._catalog = catalog
        self._budgets: dict[str, tuple[list[Budget], int]] = {}
        self._answers: dict[ScopeKey, _Cached] = {}
        self._last_log = 0.0
        self._plans: PlanCache | None = None
        self._ids = ReservationIds()

    def plans(self, keys: KeyLayout) -> PlanCache:
        """The plan cache for this store's key layout (created on first use)."""
        if self._plans is None or (self._plans.keys is not keys and self._plans.keys != keys):
            self._plans = PlanCache(keys, reservation_ttl_ms=self.reservation_ttl_ms)
        return self._plans

    def settle_request(self, request: ReserveRequest, scope: Mapping[str, str | None], now_ms: int) -> ReserveRequest:
        """The request a settle at ``now_ms`` sends: its plan rolled forward once its bucket has rolled over.

        The settle then charges the bucket it happens in and moves the state of the window the reserves beside it
        use, instead of making the script rebuild the state (``PlanCache.rolled``).
        """
        if now_ms < request.plan.valid_until_ms or self._plans is None:
            return request
        return replace(request, plan=self._plans.rolled(request.plan, self.cache_key(scope), now_ms))

    def reservation_id(self) -> str:
        """Unique across threads, processes and forks, without a clock, a lock or a system call (``ids.py``)."""
        return self._ids.next()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @property
    def catalog(self) -> Any:
        if self._catalog is None:
            from costplane.pricing.catalog import default_catalog

            self._catalog = default_catalog()
        return self._catalog

    def cached_budgets(self, tenant: str, now_ms: int) -> list[Budget] | None:
        hit = self._budgets.get(tenant)
        return hit[0] if hit is not None and hit[1] > now_ms else None

    def remember_budgets(self, tenant: str, budgets: list[Budget], now_ms: int) -> None:
        self._budgets[tenant] = (budgets, now_ms + self.budget_cache_ms)

    @staticmethod
    def cache_key(scope: Mapping[str, str | None]) -> ScopeKey:
        return tuple(sorted((scope_attrs(scope) if "user_id" in scope else scope).items()))

    def cached_answer(self, key: ScopeKey, now_ms: int) -> Answer | None:
        hit = self._answers.get(key)
        if hit is None:
            return None
        if hit.until_ms <= now_ms:
            self._answers.pop(key, None)
            return None
        self.metrics.cache_hits.inc()
        return hit.answer

    def remember(self, key: ScopeKey, answer: Answer, now_ms: int) -> Answer:
        if answer.kind == "block" and self.decision_cache_ms > 0:
            until = now_ms + min(self.decision_cache_ms, int(answer.retry_after_s * 1000) or self.decision_cache_ms)
            if len(self._answers) >= 10_000:
                self._answers.clear()  # bounded; a blocked scope costs one more round trip to come back
            self._answers[key] = _Cached(answer, until)
        self.metrics.by_kind[answer.kind].inc()
        return answer

    def on_failure(self, scope: Mapping[str, str | None], exc: BaseException | None) -> Answer:
        """Redis failed (or the breaker is open): answer by the scope's failure policy, counted and logged.

        Only a failure of Redis itself (no connection, a timeout, a read-only replica) counts towards the circuit
        breaker. An error reply to this scope's script (a key of the wrong type, one tenant's corrupt counter) says
        Redis is up: it is answered for this call alone, so one tenant's bad data never opens the circuit for all.
        """
        if exc is not None and not scope_local(exc):
            self.breaker.failure()
        mode = self.policy.mode_for(scope_attrs(scope))
        now = time.monotonic()
        if now - self._last_log > 10:
            self._last_log = now
            log.warning("budget enforcement unavailable", mode=mode, error=repr(exc) if exc else "circuit open")
        if mode == "open":
            self.metrics.fail_open.inc()
            self.metrics.by_kind["allow"].inc()
            return Answer("allow", reason=UNAVAILABLE)
        self.metrics.fail_closed.inc()
        self.metrics.by_kind["block"].inc()
        return Answer("block", reason=UNAVAILABLE, retry_after_s=self.breaker.cooldown_s)

    def early_answer(self, scope: Mapping[str, str | None], skey: ScopeKey, now_ms: int) -> Answer | None:
        """An answer that needs no I/O: a cached Block, or the failure policy's while the circuit is open."""
        cached = self.cached_answer(skey, now_ms)
        if cached is not None:  # answered from memory: no tokens counted, no price looked up
            return cached
        if not self.breaker.allow():
            return self.on_failure(scope, None)
        return None

    def reserve_request(
        self,
        keys: KeyLayout,
        tenant: str,
        scope: Mapping[str, str | None],
        skey: ScopeKey,
        now_ms: int,
        budgets: list[Budget],
        nanos: int,
        tokens: int,
    ) -> ReserveRequest:
        """This call's reservation against the scope's plan (the plan is cached until a bucket rolls over)."""
        plan = self.plans(keys).plan(skey, tenant, scope, budgets, now_ms)
        return ReserveRequest(self.reservation_id(), now_ms, now_ms + self.reservation_ttl_ms, plan, nanos, tokens)

    def reserve_answer(
        self, skey: ScopeKey, now_ms: int, request: ReserveRequest, result: ReserveResult | None
    ) -> tuple[Answer, ReserveRequest | None]:
        """The store answered (``None``: nothing to ask it): the answer, and the request if the call holds it."""
        self.breaker.success()
        answer = self.remember(skey, answer_from_reserve(request, result) if result is not None else ALLOW, now_ms)
        return answer, (request if answer.allowed and request.plan.slots else None)

    def settle_args(
        self, reservation: Reservation, usage: Mapping[str, int]
    ) -> tuple[ReserveRequest, int, int, int] | None:
        """The store's ``settle`` arguments, or None when there is nothing to send: settled before, held nothing,
        or the circuit is open (skipped rather than paying a timeout: the reservation expires by its TTL and the
        worker's reconcile brings the counter to the exact total). Marks the reservation settled either way."""
        if reservation.settled:
            return None
        reservation.settled = True
        request = reservation.request
        if request is None:
            return None
        nanos, tokens = self.actual(reservation.provider, reservation.model, usage) if usage else (0, 0)
        if not self.breaker.allow():
            return None
        now = self.now_ms()
        return self.settle_request(request, reservation.scope, now), nanos, tokens, now

    def settle_failed(self, exc: BaseException) -> None:
        if not scope_local(exc):
            self.breaker.failure()
        log.warning("settle failed; the reservation will expire", error=repr(exc))

    def amounts(
        self,
        *,
        provider: str,
        model: str,
        prompt: str | None,
        messages: list[dict[str, Any]] | None,
        prompt_tokens: int | None,
        max_tokens: int,
    ) -> tuple[int, int]:
        """(worst-case nano-USD, worst-case tokens) of a call before it is made."""
        if prompt_tokens is None:
            from costplane.pricing.tokens import count_messages, count_text

            counted = count_messages(messages, model) if messages is not None else count_text(prompt or "", model)
            prompt_tokens = counted.tokens
        nanos = int(self.catalog.worst_case_nanos(provider, model, prompt_tokens, max_tokens))
        return nanos, prompt_tokens + max_tokens

    def actual(self, provider: str, model: str, usage: Mapping[str, int]) -> tuple[int, int]:
        """(nano-USD, tokens) a call really used (priced with ``price_tokens``: no TokenUsage built per settle)."""
        get = usage.get
        i, c, w = int(get("input_tokens", 0)), int(get("cached_input_tokens", 0)), int(get("cache_write_tokens", 0))
        o, r = int(get("output_tokens", 0)), int(get("reasoning_tokens", 0))
        if (i | c | w | o | r) < 0:  # what TokenUsage refuses: a negative count would credit the budget
            raise ValueError(f"token counts must be non-negative ints: {dict(usage)!r}")
        nanos = int(self.catalog.price_tokens(provider, model, i, c, w, o, r).cost_nanos)
        return nanos, i + c + w + o + r


Op = tuple[Any, ...]  # (store method name, *args): one I/O step the driver performs
Steps = Generator[Op, Any, Any]


def check_steps(core: GuardCore, keys: KeyLayout, scope: Mapping[str, str | None]) -> Steps:
    """The check, as store steps: a driver runs each yielded op and sends back its result (or throws its error)."""
    now = core.now_ms()
    skey = core.cache_key(scope)
    cached = core.cached_answer(skey, now)
    if cached is not None:
        return cached
    if not core.breaker.allow():
        return core.on_failure(scope, None)
    try:
        tenant = str(scope_attrs(scope)["tenant"])
        budgets = core.cached_budgets(tenant, now)
        if budgets is None:
            budgets = yield ("load_budgets", tenant)
            core.remember_budgets(tenant, budgets, now)
        dkeys = core.plans(keys).plan(skey, tenant, scope, budgets, now).decision_keys
        answer = answer_from_decisions((yield ("read_decisions", dkeys)), now) if dkeys else ALLOW
    except STORE_ERRORS as exc:
        return core.on_failure(scope, exc)
    core.breaker.success()
    return core.remember(skey, answer, now)


def reserve_steps(
    core: GuardCore,
    keys: KeyLayout,
    scope: Mapping[str, str | None],
    model: str,
    provider: str | None,
    prompt: str | None,
    messages: list[dict[str, Any]] | None,
    prompt_tokens: int | None,
    max_tokens: int,
) -> Steps:
    """The reservation, as store steps; returns ``(answer, request or None, provider)``. The one flow of both
    guards: :meth:`BudgetGuard.run` drives it against a synchronous store, :meth:`AsyncBudgetGuard.run` awaits."""
    now = core.now_ms()
    skey = core.cache_key(scope)
    resolved = provider or ""
    early = core.early_answer(scope, skey, now)
    if early is not None:
        return early, None, resolved
    nanos, tokens = core.amounts(
        provider=resolved,
        model=model,
        prompt=prompt,
        messages=messages,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
    )
    try:
        tenant = str(scope["tenant"])  # never renamed by scope_attrs
        budgets = core.cached_budgets(tenant, now)
        if budgets is None:
            budgets = yield ("load_budgets", tenant)
            core.remember_budgets(tenant, budgets, now)
        request = core.reserve_request(keys, tenant, scope, skey, now, budgets, nanos, tokens)
        plan = request.plan
        result = (yield ("reserve", request)) if plan.slots or plan.decision_keys else None
    except STORE_ERRORS as exc:
        return core.on_failure(scope, exc), None, resolved
    answer, held = core.reserve_answer(skey, now, request, result)
    return answer, held, resolved


def settle_steps(core: GuardCore, reservation: Reservation, usage: Mapping[str, int]) -> Steps:
    """Idempotent settle / release, as store steps; Redis trouble is logged, never raised (the reservation
    expires). See :meth:`GuardCore.settle_args`."""
    args = core.settle_args(reservation, usage)
    if args is None:
        return None
    try:
        yield ("settle", *args)
    except STORE_ERRORS as exc:
        core.settle_failed(exc)
        return None
    core.breaker.success()
    return None


def _usage_buckets(usage: Any) -> dict[str, int]:
    if isinstance(usage, dict) and "input_tokens" in usage and "prompt_tokens" not in usage:
        return {k: int(v) for k, v in usage.items() if isinstance(v, int)}
    return usage_from_response(usage) if usage is not None else {}


class Reservation:
    """An admitted (or refused) call. Settle it with the real usage; leaving the block unsettled releases it."""

    def __init__(
        self,
        guard: Any,
        scope: Mapping[str, str | None],
        answer: Answer,
        request: ReserveRequest | None,
        provider: str,
        model: str,
    ) -> None:
        self._guard = guard
        self.scope = scope
        self.answer = answer
        self.request = request
        self.provider = provider
        self.requested_model = model
        self.settled = False

    @property
    def allowed(self) -> bool:
        return bool(self.answer.allowed)

    @property
    def model(self) -> str:
        """The model to call: the requested one, or the cheaper one a Degrade answer names."""
        return self.answer.model or self.requested_model

    def _publish(self, publisher: Any, usage: Any, buckets: dict[str, int], event_fields: dict[str, Any]) -> None:
        if publisher is None or usage is None:
            return
        fields: dict[str, Any] = {
            k: v for k, v in self.scope.items() if k in ("tenant", "team", "feature", "env", "plan")
        }
        user = self.scope.get("user") or self.scope.get("user_id")
        if user is not None:
            fields["user_id"] = user
        fields.update(provider=self.provider, model=self.model, **buckets, **event_fields)
        if hasattr(publisher, "record"):  # UsagePublisher: fills event_id, occurred_at, request_id, attempt
            publisher.record(**fields)
            return
        from uuid6 import uuid7

        from costplane.publisher.event import UsageEvent

        event_id = str(fields.pop("event_id", None) or uuid7())
        fields.setdefault("occurred_at", self._guard.core.now_ms())
        fields.setdefault("request_id", event_id)
        fields.setdefault("attempt", 1)
        fields.setdefault("status", "ok")
        publisher.emit(UsageEvent(event_id=event_id, **fields))

    def settle(self, usage: Any = None, *, publisher: Any = None, **event_fields: Any) -> None:
        """Charge the real usage (an OpenAI/Anthropic response or usage, or a bucket dict) and release the rest.

        With ``publisher`` the same usage is also emitted as a usage event (one call does both).
        """
        buckets = _usage_buckets(usage)
        self._guard.settle_reservation(self, buckets)
        self._publish(publisher, usage, buckets, event_fields)

    async def asettle(self, usage: Any = None, *, publisher: Any = None, **event_fields: Any) -> None:
        """:meth:`settle` for the asyncio guard."""
        buckets = _usage_buckets(usage)
        await self._guard.settle_reservation(self, buckets)
        self._publish(publisher, usage, buckets, event_fields)

    def release(self) -> None:
        self._guard.settle_reservation(self, {})

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        if not self.settled:
            self.release()

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if not self.settled:
            await self._guard.settle_reservation(self, {})


class _GuardShell(Generic[S]):
    """What the sync and async guards share: a store, the core, construction from ``COSTPLANE_REDIS_*``."""

    def __init__(self, store: S, **core: Any) -> None:
        self.store = store
        self.core = GuardCore(**core)

    @property
    def metrics(self) -> GuardMetrics:
        return self.core.metrics


class BudgetGuard(_GuardShell[BudgetStore]):
    """The synchronous guard. Never raises for its own I/O; see the module docstring."""

    @classmethod
    def from_settings(cls, **core: Any) -> Self:
        """A guard on the Redis (or Redis Cluster: ``COSTPLANE_REDIS_CLUSTER``) of ``COSTPLANE_REDIS_*``."""
        from costplane.config import RedisSettings, load_settings
        from costplane.enforcers.connect import open_store

        return cls(open_store(load_settings(RedisSettings)), **core)

    def run(self, steps: Steps) -> Any:
        """Drive a step generator against the store, feeding results and errors back into it."""
        try:
            op = next(steps)
            while True:
                try:
                    result = getattr(self.store, op[0])(*op[1:])
                except STORE_ERRORS as exc:
                    op = steps.throw(exc)
                else:
                    op = steps.send(result)
        except StopIteration as done:
            return done.value

    def check(self, scope: Mapping[str, str | None]) -> Answer:
        """The stream's decisions for this scope: Allow, Block(reason, retry_after) or Degrade(model)."""
        core = self.core
        hit = core.cached_answer(core.cache_key(scope), core.now_ms())  # a blocked scope: memory only
        if hit is not None:
            return hit
        return cast(Answer, self.run(check_steps(core, self.store.keys, scope)))

    def reserve(
        self,
        scope: Mapping[str, str | None],
        *,
        model: str,
        provider: str | None = None,
        prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        prompt_tokens: int | None = None,
        max_tokens: int = 1024,
    ) -> Reservation:
        """Reserve the call's worst case against every matching budget (all or nothing) and read decisions."""
        steps = reserve_steps(
            self.core, self.store.keys, scope, model, provider, prompt, messages, prompt_tokens, max_tokens
        )
        answer, request, resolved = self.run(steps)
        return Reservation(self, scope, answer, request, resolved, model)

    def flush(self) -> None:
        """Nothing to wait for: a settle is applied in Redis when :meth:`Reservation.settle` returns.

        Kept so code written against a guard that deferred its settles' replies still runs unchanged.
        """

    def settle_reservation(self, reservation: Reservation, usage: Mapping[str, int]) -> None:
        """:func:`settle_steps` against the store; Redis trouble is logged, never raised."""
        self.run(settle_steps(self.core, reservation, usage))


class AsyncBudgetGuard(_GuardShell[AsyncBudgetStore | BudgetStore]):
    """The asyncio guard: same answers, same policy, awaiting an :class:`AsyncRedisBudgetStore` (or calling a
    synchronous store such as :class:`InMemoryBudgetStore` in tests)."""

    @classmethod
    def from_settings(cls, **core: Any) -> Self:
        """An asyncio guard on the Redis (or Redis Cluster) of ``COSTPLANE_REDIS_*``."""
        from costplane.config import RedisSettings, load_settings
        from costplane.enforcers.connect import open_async_store

        return cls(open_async_store(load_settings(RedisSettings)), **core)

    async def run(self, steps: Steps) -> Any:
        try:
            op = next(steps)
            while True:
                try:
                    result = getattr(self.store, op[0])(*op[1:])
                    if inspect.isawaitable(result):  # a sync store (InMemoryBudgetStore) serves tests as is
                        result = await result
                except STORE_ERRORS as exc:
                    op = steps.throw(exc)
                else:
                    op = steps.send(result)
        except StopIteration as done:
            return done.value

    async def check(self, scope: Mapping[str, str | None]) -> Answer:
        return cast(Answer, await self.run(check_steps(self.core, self.store.keys, scope)))

    async def reserve(
        self,
        scope: Mapping[str, str | None],
        *,
        model: str,
        provider: str | None = None,
        prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        prompt_tokens: int | None = None,
        max_tokens: int = 1024,
    ) -> Reservation:
        steps = reserve_steps(
            self.core, self.store.keys, scope, model, provider, prompt, messages, prompt_tokens, max_tokens
        )
        answer, request, resolved = await self.run(steps)
        return Reservation(self, scope, answer, request, resolved, model)

    async def settle_reservation(self, reservation: Reservation, usage: Mapping[str, int]) -> None:
        await self.run(settle_steps(self.core, reservation, usage))
