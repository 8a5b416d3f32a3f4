"""The cost of one usage record: exact integer arithmetic, rounded once to nano-USD.

Unit prices are turned into integers once per (model, service tier, size tier) — ``rate × 10**scale`` where
``scale`` (at least 18, i.e. atto-USD per token) is large enough for every price of the catalog to be an exact
integer, halves for batch included — so pricing an event is a handful of integer multiplications and one half-even
integer division to nano-USD. ``Cost.cost_usd`` and ``Cost.breakdown`` are the same integers shown as exact
Decimals (before rounding), computed only when someone looks.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from costplane.pricing.offpeak import OffPeakSchedule
from costplane.pricing.rates import BUCKETS, FieldTable, Rate, crossed, resolve_rates

__all__ = ["BUCKETS", "Cost", "ModelRates", "TokenUsage", "decimal_from_units", "round_half_even"]

NANO_SCALE = 9


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Disjoint token buckets of one call (no bucket includes another, as in the event schema).

    ``cache_write_tokens`` are billed at the 5-minute cache-write price; ``cache_write_1h_tokens`` (not in the event
    schema; for callers that know the split) at the 1-hour price. Prompt size = input + cached + both cache writes.
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def __post_init__(self) -> None:
        # One bitwise OR is negative iff any count is; a float or None raises TypeError. Cheap on the hot path.
        try:
            negative = (
                self.input_tokens
                | self.cached_input_tokens
                | self.cache_write_tokens
                | self.output_tokens
                | self.reasoning_tokens
                | self.cache_write_1h_tokens
            ) < 0
        except TypeError:
            negative = True
        if negative:
            raise ValueError(f"token counts must be non-negative ints: {self!r}")

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens + self.cache_write_1h_tokens


def round_half_even(units: int, divisor: int) -> int:
    """``units / divisor`` rounded half to even, in integers (no Decimal context, no float)."""
    quotient, remainder = divmod(units, divisor)
    twice = 2 * remainder
    if twice > divisor or (twice == divisor and quotient % 2 == 1):
        quotient += 1
    return quotient


def decimal_from_units(units: int, scale: int) -> Decimal:
    """Exactly ``units × 10**-scale`` as a Decimal without trailing zeros (no context rounding involved)."""
    if units == 0:
        return Decimal(0)
    while scale > 0 and units % 10 == 0:
        units //= 10
        scale -= 1
    return Decimal(f"{units}E-{scale}")


class Cost(NamedTuple):
    """The price of one usage record.

    ``cost_nanos`` is the event-level integer (rounded once, half-even) that every sum uses; ``cost_usd`` and
    ``breakdown`` are exact before rounding. ``unpriced`` means the catalog has no price for the model: the cost is
    0 and the event must be flagged, never silently treated as free.
    """

    cost_nanos: int
    unpriced: bool
    price_version: str
    units: int = 0
    bucket_units: tuple[int, ...] = ()
    scale: int = 18

    @property
    def cost_usd(self) -> Decimal:
        return decimal_from_units(self.units, self.scale)

    @property
    def breakdown(self) -> dict[str, Decimal]:
        """Exact cost per bucket (only buckets that cost something or had tokens)."""
        return {
            name: decimal_from_units(units, self.scale)
            for name, units in zip(BUCKETS, self.bucket_units, strict=True)
            if units or name != "cache_write_1h"
        }


def unpriced_cost(price_version: str) -> Cost:
    return Cost(0, True, price_version, 0, (0,) * len(BUCKETS))


def exact_units(value: Decimal, scale: int) -> int:
    """``value × 10**scale`` as an int, refusing anything that would not be exact."""
    scaled = value.scaleb(scale)
    integral = int(scaled)
    if scaled != integral:
        raise ValueError(f"price {value} is not exact at 10^-{scale} USD")
    return integral


class ModelRates:
    """A model's prices compiled to integer rate tuples, built lazily per (service tier, size tier) and cached."""

    __slots__ = (
        "_cache",
        "_divisor",
        "inclusive",
        "off_peak",
        "off_peak_table",
        "name",
        "price_version",
        "provider",
        "scale",
        "table",
        "thresholds",
    )

    def __init__(
        self,
        name: str,
        provider: str,
        table: FieldTable,
        price_version: str,
        scale: int,
        inclusive: bool = False,
        off_peak: OffPeakSchedule | None = None,
        off_peak_table: FieldTable | None = None,
    ) -> None:
        self.name = name
        self.provider = provider
        self.table = table
        self.thresholds = table.thresholds
        self.price_version = price_version
        self.scale = scale
        self._divisor = 10 ** (scale - NANO_SCALE)
        self.inclusive = inclusive
        self.off_peak = off_peak if off_peak_table is not None else None
        self.off_peak_table = off_peak_table
        self._cache: dict[tuple[str, int, bool], tuple[int, ...]] = {}

    def level(self, prompt_tokens: int) -> int:
        """How many size thresholds the prompt crossed."""
        level = 0
        if self.inclusive:
            for n in self.thresholds:
                if prompt_tokens >= n:
                    level += 1
        else:
            for n in self.thresholds:
                if prompt_tokens > n:
                    level += 1
        return level

    def is_off_peak(self, at_ms: int) -> bool:
        return self.off_peak is not None and self.off_peak.is_open(at_ms)

    def _table(self, off_peak: bool) -> FieldTable:
        return self.off_peak_table if off_peak and self.off_peak_table is not None else self.table

    def explain(self, tier: str, prompt_tokens: int, off_peak: bool = False) -> tuple[Rate, ...]:
        """The resolved unit prices (with their source fields) for a tier and prompt size."""
        table = self._table(off_peak)
        rates: tuple[Rate, ...] = resolve_rates(table, tier, crossed(table.thresholds, prompt_tokens, self.inclusive))
        return rates

    def rates(self, tier: str, level: int, off_peak: bool = False) -> tuple[int, ...]:
        key = (tier, level, off_peak)
        cached = self._cache.get(key)
        if cached is None:
            table = self._table(off_peak)
            crossed_desc = tuple(n for n in reversed(self.thresholds[:level]) if n in table.thresholds)
            cached = tuple(exact_units(r.usd, self.scale) for r in resolve_rates(table, tier, crossed_desc))
            self._cache[key] = cached
        return cached

    def price(
        self,
        tier: str,
        input_tokens: int,
        cached_input_tokens: int,
        cache_write_tokens: int,
        cache_write_1h_tokens: int,
        output_tokens: int,
        reasoning_tokens: int,
        off_peak: bool = False,
    ) -> Cost:
        prompt = input_tokens + cached_input_tokens + cache_write_tokens + cache_write_1h_tokens
        level = self.level(prompt) if self.thresholds else 0
        r_in, r_cached, r_w5, r_w1, r_out, r_reason = self.rates(tier, level, off_peak)
        buckets = (
            input_tokens * r_in,
            cached_input_tokens * r_cached,
            cache_write_tokens * r_w5,
            cache_write_1h_tokens * r_w1,
            output_tokens * r_out,
            reasoning_tokens * r_reason,
        )
        units = sum(buckets)
        nanos = round_half_even(units, self._divisor)
        return Cost(nanos, False, self.price_version, units, buckets, self.scale)
