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

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter
from uuid6 import uuid7

from costplane.budgets.model import Budget
from costplane.enforcers.plan import (
    ALLOW,
    Answer,
    ReserveRequest,
    Slot,
    answer_from_decisions,
    answer_from_reserve,
    build_reserve,
    decision_keys,
    matching,
    scope_attrs,
)
from costplane.enforcers.policy import CircuitBreaker, FailurePolicy
from costplane.enforcers.store import RedisBudgetStore
from costplane.logging import get_logger
from costplane.publisher.adapters import usage_from_response

log = get_logger("costplane.guard")
UNAVAILABLE = "enforcement_unavailable"
#: The failures of the guard's own I/O that the failure policy answers for.
STORE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)


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
        self.fail_closed = Counter("costplane_guard_fail_closed_total", "Calls blocked because Redis failed",
                                   registry=r)
        self.cache_hits = Counter("costplane_guard_cache_hits_total", "Answers served from the local cache",
                                  registry=r)


class GuardCore:
    """State and pure steps shared by the sync and async guards (budget cache, decision cache, policy)."""

    def __init__(self, *, policy: FailurePolicy | None = None, breaker: CircuitBreaker | None = None,
                 reservation_ttl_s: float = 300.0, budget_cache_s: float = 5.0, decision_cache_s: float = 1.0,
                 catalog: Any = None, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy or FailurePolicy()
        self.breaker = breaker or CircuitBreaker()
        self.reservation_ttl_ms = int(reservation_ttl_s * 1000)
        self.budget_cache_ms = int(budget_cache_s * 1000)
        self.decision_cache_ms = int(decision_cache_s * 1000)
        self.metrics = GuardMetrics(registry)
        self.clock = clock
        self._catalog = catalog
        self._budgets: dict[str, tuple[list[Budget], int]] = {}
        self._answers: dict[tuple[tuple[str, str | None], ...], _Cached] = {}
        self._last_log = 0.0

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
    def cache_key(scope: Mapping[str, str | None]) -> tuple[tuple[str, str | None], ...]:
        return tuple(sorted(scope_attrs(scope).items()))

    def cached_answer(self, scope: Mapping[str, str | None], now_ms: int) -> Answer | None:
        hit = self._answers.get(self.cache_key(scope))
        if hit is None:
            return None
        if hit.until_ms <= now_ms:
            del self._answers[self.cache_key(scope)]
            return None
        self.metrics.cache_hits.inc()
        return hit.answer

    def remember(self, scope: Mapping[str, str | None], answer: Answer, now_ms: int) -> Answer:
        if answer.kind == "block":
            until = now_ms + min(self.decision_cache_ms, int(answer.retry_after_s * 1000) or self.decision_cache_ms)
            self._answers[self.cache_key(scope)] = _Cached(answer, until)
        self.metrics.answers.labels(answer.kind).inc()
        return answer

    def on_failure(self, scope: Mapping[str, str | None], exc: BaseException | None) -> Answer:
        """Redis failed (or the breaker is open): answer by the scope's failure policy, counted and logged."""
        if exc is not None:
            self.breaker.failure()
        mode = self.policy.mode_for(scope_attrs(scope))
        now = time.monotonic()
        if now - self._last_log > 10:
            self._last_log = now
            log.warning("budget enforcement unavailable", mode=mode, error=repr(exc) if exc else "circuit open")
        if mode == "open":
            self.metrics.fail_open.inc()
            self.metrics.answers.labels("allow").inc()
            return Answer("allow", reason=UNAVAILABLE)
        self.metrics.fail_closed.inc()
        self.metrics.answers.labels("block").inc()
        return Answer("block", reason=UNAVAILABLE, retry_after_s=self.breaker.cooldown_s)

    def amounts(self, *, provider: str | None, model: str, prompt: str | None, messages: list[dict[str, Any]] | None,
                prompt_tokens: int | None, max_tokens: int) -> tuple[int, int, str]:
        """(worst-case nano-USD, worst-case tokens, provider) of a call before it is made."""
        if prompt_tokens is None:
            from costplane.pricing.tokens import count_messages, count_text

            counted = count_messages(messages, model) if messages is not None else count_text(prompt or "", model)
            prompt_tokens = counted.tokens
        resolved = provider or ""
        nanos = int(self.catalog.worst_case_nanos(resolved, model, prompt_tokens, max_tokens))
        return nanos, prompt_tokens + max_tokens, resolved

    def actual(self, slots: tuple[Slot, ...], provider: str, model: str, usage: Mapping[str, int]) -> list[int]:
        from costplane.pricing.cost import TokenUsage

        buckets = {k: int(usage.get(k, 0)) for k in ("input_tokens", "cached_input_tokens", "cache_write_tokens",
                                                      "output_tokens", "reasoning_tokens")}
        nanos = int(self.catalog.price(provider, model, TokenUsage(**buckets)).cost_nanos)
        tokens = sum(buckets.values())
        return [nanos if s.budget.unit == "usd" else tokens for s in slots]


class Reservation:
    """An admitted (or refused) call. Settle it with the real usage; leaving the block unsettled releases it."""

    def __init__(self, guard: BudgetGuard, scope: Mapping[str, str | None], answer: Answer,
                 request: ReserveRequest | None, provider: str, model: str) -> None:
        self._guard = guard
        self.scope = scope
        self.answer = answer
        self.request = request
        self.provider = provider
        self.requested_model = model
        self.settled = False

    @property
    def allowed(self) -> bool:
        return self.answer.allowed

    @property
    def model(self) -> str:
        """The model to call: the requested one, or the cheaper one a Degrade answer names."""
        return self.answer.model or self.requested_model

    def settle(self, usage: Any = None, *, publisher: Any = None, **event_fields: Any) -> None:
        """Charge the real usage (an OpenAI/Anthropic response or usage, or a bucket dict) and release the rest.

        With ``publisher`` the same usage is also emitted as a usage event (one call does both).
        """
        buckets = usage if isinstance(usage, dict) and "input_tokens" in usage and "prompt_tokens" not in usage \
            else (usage_from_response(usage) if usage is not None else {})
        self._guard.settle_reservation(self, buckets)
        if publisher is not None and usage is not None:
            fields = {k: v for k, v in self.scope.items() if k in ("tenant", "team", "feature", "env", "plan")}
            user = self.scope.get("user") or self.scope.get("user_id")
            publisher.record(**fields, user_id=user, provider=self.provider, model=self.model, **buckets,
                             **event_fields)

    def release(self) -> None:
        self._guard.settle_reservation(self, {})

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        if not self.settled:
            self.release()


class BudgetGuard:
    """The synchronous guard. Never raises for its own I/O; see the module docstring."""

    def __init__(self, store: Any, **core: Any) -> None:
        self.store = store
        self.core = GuardCore(**core)

    @classmethod
    def from_settings(cls, **core: Any) -> BudgetGuard:
        from costplane.config import RedisSettings, load_settings

        settings = load_settings(RedisSettings)
        store = RedisBudgetStore.from_url(settings.url.get_secret_value(), prefix=settings.key_prefix,
                                          timeout_s=settings.timeout_ms / 1000)
        return cls(store, **core)

    @property
    def metrics(self) -> GuardMetrics:
        return self.core.metrics

    def _budgets(self, tenant: str, now_ms: int) -> list[Budget]:
        cached = self.core.cached_budgets(tenant, now_ms)
        if cached is None:
            cached = self.store.load_budgets(tenant)
            self.core.remember_budgets(tenant, cached, now_ms)
        return cached

    def check(self, scope: Mapping[str, str | None]) -> Answer:
        """The stream's decisions for this scope: Allow, Block(reason, retry_after) or Degrade(model)."""
        core = self.core
        now = core.now_ms()
        cached = core.cached_answer(scope, now)
        if cached is not None:
            return cached
        if not core.breaker.allow():
            return core.on_failure(scope, None)
        try:
            tenant = str(scope_attrs(scope)["tenant"])
            keys = decision_keys(self.store.keys, tenant, matching(self._budgets(tenant, now), scope))
            answer = answer_from_decisions(self.store.read_decisions(keys), now) if keys else ALLOW
        except STORE_ERRORS as exc:
            return core.on_failure(scope, exc)
        core.breaker.success()
        return core.remember(scope, answer, now)

    def reserve(self, scope: Mapping[str, str | None], *, model: str, provider: str | None = None,
                prompt: str | None = None, messages: list[dict[str, Any]] | None = None,
                prompt_tokens: int | None = None, max_tokens: int = 1024) -> Reservation:
        """Reserve the call's worst case against every matching budget (all or nothing) and read decisions."""
        core = self.core
        now = core.now_ms()
        nanos, tokens, resolved = core.amounts(provider=provider, model=model, prompt=prompt, messages=messages,
                                               prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        cached = core.cached_answer(scope, now)
        if cached is not None:
            return Reservation(self, scope, cached, None, resolved, model)
        if not core.breaker.allow():
            return Reservation(self, scope, core.on_failure(scope, None), None, resolved, model)
        try:
            tenant = str(scope_attrs(scope)["tenant"])
            matched = matching(self._budgets(tenant, now), scope)
            request = build_reserve(self.store.keys, tenant, matched, reservation_id=str(uuid7()), now_ms=now,
                                    ttl_ms=core.reservation_ttl_ms, usd_nanos=nanos, tokens=tokens)
            result = self.store.reserve(request) if request.slots or request.decision_keys else None
        except STORE_ERRORS as exc:
            return Reservation(self, scope, core.on_failure(scope, exc), None, resolved, model)
        core.breaker.success()
        answer = answer_from_reserve(request, result) if result is not None else ALLOW
        held = request if answer.allowed and request.slots else None
        return Reservation(self, scope, core.remember(scope, answer, now), held, resolved, model)

    def settle_reservation(self, reservation: Reservation, usage: Mapping[str, int]) -> None:
        """Idempotent settle / release; Redis trouble here is logged, never raised (the reservation expires)."""
        if reservation.settled:
            return
        reservation.settled = True
        request = reservation.request
        if request is None:
            return
        amounts = self.core.actual(request.slots, reservation.provider, reservation.model, usage) if usage \
            else [0] * len(request.slots)
        try:
            self.store.settle(request.tenant, request.reservation_id, request.slots, amounts)
        except STORE_ERRORS as exc:
            self.core.breaker.failure()
            log.warning("settle failed; the reservation will expire", error=repr(exc))
