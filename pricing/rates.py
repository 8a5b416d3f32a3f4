"""Which unit price applies to each token bucket: the most specific price wins.

Given one model's prices (LiteLLM field names, exact Decimals), a service tier and the size thresholds the prompt
crossed, :func:`resolve_rates` picks one price per bucket:

* size tier: for each field, the largest crossed threshold ``N`` at which that field is priced
  (``<field>_above_Nk_tokens`` or a tier variant of it) applies to the whole request; none → the flat price;
* service tier: ``<field>[_above_Nk_tokens]_batches|_priority|_flex`` where present; a missing batch price is 50 %
  of the same field's standard price at the same size tier, a missing priority or flex price is the standard one;
* bucket fallbacks: cache read → ``input_cost_per_token_cache_hit`` → the input rate; 5-minute cache write → the
  input rate; 1-hour cache write → the 5-minute write rate; reasoning → the output rate (a size- or service-tier
  output price beats a flat reasoning price, as in LiteLLM).

Pure functions over plain data, so the same code serves the worker, the CLI and the tests' expectations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from costplane.pricing import fields as f

HALF: Final = Decimal("0.5")

#: Buckets in the order every rate tuple uses. ``cache_write_1h`` is a sub-bucket of cache writes billed at the
#: 1-hour price; the event schema's single ``cache_write_tokens`` bucket is billed at the 5-minute price.
BUCKETS: Final[tuple[str, ...]] = (
    "input",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning",
)


@dataclass(frozen=True, slots=True)
class Rate:
    """A resolved unit price (USD per token) and the field it came from, for explanations."""

    usd: Decimal
    source: str


class FieldTable:
    """One model's prices indexed as ``base field → size threshold (0 = flat) → tier suffix → price``."""

    __slots__ = ("_table", "thresholds")

    def __init__(self, prices: Mapping[str, Decimal]) -> None:
        table: dict[str, dict[int, dict[str, tuple[Decimal, str]]]] = {}
        for key, value in prices.items():
            parsed = f.parse_price_key(key)
            if parsed is None:
                continue
            base, threshold, suffix = parsed
            table.setdefault(base, {}).setdefault(threshold, {})[suffix] = (value, key)
        self._table = table
        self.thresholds: tuple[int, ...] = tuple(sorted({n for by_n in table.values() for n in by_n if n > 0}))

    def has(self, base: str) -> bool:
        return base in self._table

    def specific(self, base: str, crossed_desc: tuple[int, ...], suffix: str) -> Rate | None:
        """The price of ``base`` from a size- or service-tier key only (never the flat standard key)."""
        by_n = self._table.get(base)
        if by_n is None:
            return None
        for n in crossed_desc:
            entry = by_n.get(n)
            if entry is None:
                continue
            if suffix and suffix in entry:
                return Rate(*entry[suffix])
            if "" in entry:
                value, key = entry[""]
                return Rate(value * HALF, f"{key} × 0.5") if suffix == "_batches" else Rate(value, key)
        flat = by_n.get(0, {})
        if suffix and suffix in flat:
            return Rate(*flat[suffix])
        return None

    def resolve(self, base: str, crossed_desc: tuple[int, ...], suffix: str) -> Rate | None:
        """The most specific price of ``base``; a missing batch price is half the standard one."""
        rate = self.specific(base, crossed_desc, suffix)
        if rate is not None:
            return rate
        flat = self._table.get(base, {}).get(0, {})
        if "" not in flat:
            return None
        value, key = flat[""]
        return Rate(value * HALF, f"{key} × 0.5") if suffix == "_batches" else Rate(value, key)


ZERO_RATE: Final = Rate(Decimal(0), "unpriced")


def crossed(thresholds: tuple[int, ...], prompt_tokens: int, inclusive: bool = False) -> tuple[int, ...]:
    """Thresholds the prompt passed, largest first (``>``; ``>=`` for providers that bill from N on)."""
    if inclusive:
        return tuple(n for n in reversed(thresholds) if prompt_tokens >= n)
    return tuple(n for n in reversed(thresholds) if prompt_tokens > n)


def resolve_rates(table: FieldTable, service_tier: str, crossed_desc: tuple[int, ...]) -> tuple[Rate, ...]:
    """One :class:`Rate` per bucket of :data:`BUCKETS` for the given tier and crossed size thresholds."""
    suffix = f.TIER_SUFFIX[f.normalize_tier(service_tier)]
    input_rate = table.resolve(f.INPUT, crossed_desc, suffix) or ZERO_RATE
    output_rate = table.resolve(f.OUTPUT, crossed_desc, suffix) or ZERO_RATE
    cached = (
        table.resolve(f.CACHE_READ, crossed_desc, suffix)
        or table.resolve(f.CACHE_HIT, crossed_desc, suffix)
        or input_rate
    )
    write_5m = table.resolve(f.CACHE_WRITE, crossed_desc, suffix) or input_rate
    write_1h = table.resolve(f.CACHE_WRITE_1H, crossed_desc, suffix) or write_5m
    reasoning = table.specific(f.REASONING, crossed_desc, suffix)
    if reasoning is None:
        output_is_specific = table.specific(f.OUTPUT, crossed_desc, suffix) is not None
        reasoning = (
            output_rate if output_is_specific else (table.resolve(f.REASONING, crossed_desc, suffix) or output_rate)
        )
    return (input_rate, cached, write_5m, write_1h, output_rate, reasoning)
