"""``costplane forecast scenario``: a month of planned traffic priced from first principles, call shape by call shape.

A planned workload is a number of calls per month, each with a prompt and an output. The prompt of a call is the
system prompt, the new input of the turn, and (in a session) the history grown so far: turn ``k`` (0-based) of a
session carries ``k × growth`` more prompt tokens than the first. A share of each prompt is read from the prompt
cache. Each call may be retried: a retry re-sends the same prompt and is billed as input only (the failed attempt's
output is never delivered). Every distinct call shape is priced *per call* with the catalog, exactly as
``costplane price`` prices it (size tiers depend on one call's prompt, never on a sum), rounded half-even to
nano-USD once per call, then multiplied by how many calls of that shape the month holds.

Everything here is integer or :class:`~fractions.Fraction` arithmetic; nothing reads a clock except the catalog's
choice of the version in force now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from costplane.pricing.catalog import PriceCatalog
from costplane.pricing.cost import round_half_even
from costplane.reports.errors import ReportError

TIERS = ("standard", "batch", "flex", "priority")


class ScenarioError(ReportError):
    """A scenario that cannot be priced (a negative count, a share outside 0..1, an unknown model): one line."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A month of planned calls. ``sessions × messages`` or ``requests`` calls; token counts are per call."""

    calls_per_shape: int
    turns: int
    input_tokens: int
    output_tokens: int
    system_prompt_tokens: int = 0
    cached_share: Fraction = Fraction(0)
    tier: str = "standard"
    retry_rate: Fraction = Fraction(0)
    growth: int = 0

    @property
    def calls(self) -> int:
        return self.calls_per_shape * self.turns


@dataclass(frozen=True, slots=True)
class CallShape:
    """Calls that cost the same: how many, and their disjoint token buckets."""

    count: int
    retries: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


def _count(name: str, value: int | None) -> int:
    if value is None:
        raise ScenarioError(f"{name} is required")
    if value < 0:
        raise ScenarioError(f"{name} must not be negative, not {value}")
    return value


def _share(name: str, text: str | None, *, at_most_one: bool) -> Fraction:
    if text is None or text == "":
        return Fraction(0)
    try:
        value = Fraction(Decimal(text.strip()))
    except (InvalidOperation, ValueError):
        raise ScenarioError(f"{name} must be a number, not {text!r}") from None
    if value < 0 or (at_most_one and value > 1):
        raise ScenarioError(f"{name} must be between 0 and {'1' if at_most_one else 'any positive number'}, not {text}")
    return value


def parse_scenario(
    *,
    sessions: int | None = None,
    messages: int | None = None,
    requests: int | None = None,
    input_tokens: int | None = 0,
    output_tokens: int | None = 0,
    system_prompt_tokens: int | None = 0,
    cached_share: str | None = None,
    tier: str = "standard",
    retry_rate: str | None = None,
    growth: int | None = 0,
) -> Scenario:
    """Check the command-line values and build the scenario (every problem is one :class:`ScenarioError` line)."""
    if requests is not None:
        if sessions is not None or messages is not None:
            raise ScenarioError("give either --requests or --sessions with --messages, not both")
        if growth:
            raise ScenarioError("--growth is per turn of a session: it needs --sessions and --messages")
        per_shape, turns = _count("--requests", requests), 1
    elif sessions is None and messages is None:
        raise ScenarioError("give --sessions N --messages M, or --requests N")
    else:
        per_shape, turns = _count("--sessions", sessions), _count("--messages", messages)
    if tier not in TIERS:
        raise ScenarioError(f"--tier must be one of {', '.join(TIERS)}, not {tier!r}")
    return Scenario(
        calls_per_shape=per_shape,
        turns=turns,
        input_tokens=_count("--input", input_tokens),
        output_tokens=_count("--output", output_tokens),
        system_prompt_tokens=_count("--system-prompt", system_prompt_tokens),
        cached_share=_share("--cached-share", cached_share, at_most_one=True),
        tier=tier,
        retry_rate=_share("--retry-rate", retry_rate, at_most_one=False),
        growth=_count("--growth", growth),
    )


def call_shapes(scenario: Scenario) -> list[CallShape]:
    """One shape per turn of a session (one in all without growth): the calls that cost the same.

    The cached part of a prompt is ``prompt × cached_share`` rounded half-even to a whole token; a shape's retries
    are ``count × retry_rate`` rounded half-even to a whole attempt.
    """
    shapes: list[CallShape] = []
    share, rate = scenario.cached_share, scenario.retry_rate
    distinct_turns = scenario.turns if scenario.growth else min(scenario.turns, 1)
    for turn in range(distinct_turns):
        count = scenario.calls_per_shape * (1 if scenario.growth else scenario.turns)
        prompt = scenario.system_prompt_tokens + scenario.input_tokens + turn * scenario.growth
        cached = round_half_even(prompt * share.numerator, share.denominator)
        retries = round_half_even(count * rate.numerator, rate.denominator)
        shapes.append(CallShape(count, retries, prompt - cached, cached, scenario.output_tokens))
    return shapes


@dataclass(frozen=True, slots=True)
class ScenarioCost:
    """The month of one scenario on one model (JSON keys as documented in docs/forecast.md)."""

    model: str
    provider: str
    price_version: str
    tier: str
    calls: int
    retry_attempts: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    retry_input_tokens: int
    calls_cost_nanos: int
    retry_cost_nanos: int

    @property
    def monthly_cost_nanos(self) -> int:
        return self.calls_cost_nanos + self.retry_cost_nanos

    @property
    def per_call_nanos(self) -> int | None:
        """The month's cost (retries included) per planned call, rounded half-even; None without calls."""
        return round_half_even(self.monthly_cost_nanos, self.calls) if self.calls else None

    def row(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "price_version": self.price_version,
            "tier": self.tier,
            "calls": self.calls,
            "retry_attempts": self.retry_attempts,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "retry_input_tokens": self.retry_input_tokens,
            "per_call_nanos": self.per_call_nanos,
            "retry_cost_nanos": self.retry_cost_nanos,
            "monthly_cost_nanos": self.monthly_cost_nanos,
        }


def price_scenario(catalog: PriceCatalog, scenario: Scenario, model: str, provider: str = "") -> ScenarioCost:
    """The scenario's month on ``model``, every call shape priced per call with the version in force now."""
    rates = catalog.lookup(provider or None, model)
    if rates is None:
        raise ScenarioError(f"unknown model {model!r}: the price catalog {catalog.price_version} has no price for it")
    totals = [0] * 6
    calls_cost = retry_cost = 0
    for shape in call_shapes(scenario):
        call = catalog.price_tokens(
            provider or None,
            model,
            shape.input_tokens,
            shape.cached_input_tokens,
            0,
            shape.output_tokens,
            service_tier=scenario.tier,
        )
        calls_cost += shape.count * call.cost_nanos
        if shape.retries:
            retry = catalog.price_tokens(
                provider or None, model, shape.input_tokens, shape.cached_input_tokens, service_tier=scenario.tier
            )
            retry_cost += shape.retries * retry.cost_nanos
        prompt = shape.input_tokens + shape.cached_input_tokens
        totals[0] += shape.count * shape.input_tokens + shape.retries * shape.input_tokens
        totals[1] += (shape.count + shape.retries) * shape.cached_input_tokens
        totals[2] += shape.count * shape.output_tokens
        totals[3] += shape.retries
        totals[4] += shape.retries * prompt
    return ScenarioCost(
        model=model,
        provider=rates.provider,
        price_version=rates.price_version,
        tier=scenario.tier,
        calls=scenario.calls,
        retry_attempts=totals[3],
        input_tokens=totals[0],
        cached_input_tokens=totals[1],
        output_tokens=totals[2],
        retry_input_tokens=totals[4],
        calls_cost_nanos=calls_cost,
        retry_cost_nanos=retry_cost,
    )


def compare(catalog: PriceCatalog, scenario: Scenario, models: Sequence[str], provider: str = "") -> list[ScenarioCost]:
    """The same scenario on each model, in the order given (duplicates once); every model is checked first."""
    unique = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    if not unique:
        raise ScenarioError("give --model MODEL or --compare MODEL,MODEL")
    return [price_scenario(catalog, scenario, m, provider) for m in unique]
