"""What one event's cost is made of, and what it would have cost otherwise: the amounts the reports sum.

The reports ask questions that need a price per call, not per sum: how much did cache reads save, what did the
system prompt cost, what would caching the static prefix save, what did a result-cache hit avoid. Size tiers apply
per call, so these amounts cannot be computed later from summed tokens; the sink computes them once per event at
ingest (with the same catalog version, service tier, size tier and off-peak window that priced the event) and
stores them beside ``cost_nanos``. Each amount is rounded once, half-even, to integer nano-USD, like the cost.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from costplane.pricing import fields as f
from costplane.pricing.catalog import PriceCatalog, UsageLike
from costplane.pricing.cost import round_half_even

#: Providers cache a prompt prefix only from this many tokens on (OpenAI and Anthropic both start at 1 024).
MIN_CACHEABLE_PREFIX_TOKENS = 1024


class LedgerEvent(UsageLike, Protocol):
    """An event with the optional fields the ledger reads (a UsageEvent fits)."""

    system_prompt_tokens: int | None
    result_cache_hit: bool | None


class LedgerAmounts(NamedTuple):
    """The per-event amounts stored beside an event's cost (all integer nano-USD except the token count).

    - ``input_cost_nanos``: the prompt side (uncached input, cache reads, cache writes) of what the call cost.
    - ``cache_saved_nanos``: what the cache-read tokens would have cost as uncached input, minus what they cost.
    - ``system_prompt_cost_nanos``: the prompt side's cost attributed to the system prompt in proportion to its
      share of the prompt tokens.
    - ``uncached_prefix_tokens``: system-prompt tokens billed as uncached input on a call whose system prompt is
      long enough to cache (``MIN_CACHEABLE_PREFIX_TOKENS``): the prefix is read from the cache first, so they are
      the system prompt less the cache reads and writes, at most the uncached input.
    - ``uncached_prefix_cost_nanos``: those tokens at the uncached input price.
    - ``prefix_cache_saving_nanos``: what caching them would save (input price minus cache-read price).
    - ``result_cache_avoided_nanos``: for a call the app served from its own result cache (cost 0), what it would
      have cost.
    """

    input_cost_nanos: int = 0
    cache_saved_nanos: int = 0
    system_prompt_cost_nanos: int = 0
    uncached_prefix_tokens: int = 0
    uncached_prefix_cost_nanos: int = 0
    prefix_cache_saving_nanos: int = 0
    result_cache_avoided_nanos: int = 0


NOTHING = LedgerAmounts()


def ledger_amounts(catalog: PriceCatalog, event: LedgerEvent) -> LedgerAmounts:
    """The amounts of one event under the catalog version in force at its ``occurred_at`` (zeros if unpriced)."""
    rates = catalog.lookup(event.provider, event.model, event.occurred_at)
    if rates is None:
        return NOTHING
    if event.result_cache_hit:
        return LedgerAmounts(result_cache_avoided_nanos=catalog.price_event(event).cost_nanos)
    prompt = event.input_tokens + event.cached_input_tokens + event.cache_write_tokens
    tier = f.normalize_tier(event.service_tier)
    level = rates.level(prompt) if rates.thresholds else 0
    r_in, r_cached, r_write, _r_write_1h, _r_out, _r_reason = rates.rates(
        tier, level, rates.is_off_peak(event.occurred_at)
    )
    divisor = 10 ** (rates.scale - 9)
    prompt_units = event.input_tokens * r_in + event.cached_input_tokens * r_cached + event.cache_write_tokens * r_write
    system = min(event.system_prompt_tokens or 0, prompt)
    uncached_prefix = 0
    if (event.system_prompt_tokens or 0) >= MIN_CACHEABLE_PREFIX_TOKENS:
        beyond_cache = (event.system_prompt_tokens or 0) - event.cached_input_tokens - event.cache_write_tokens
        uncached_prefix = min(max(beyond_cache, 0), event.input_tokens)
    return LedgerAmounts(
        input_cost_nanos=round_half_even(prompt_units, divisor),
        cache_saved_nanos=round_half_even(event.cached_input_tokens * (r_in - r_cached), divisor),
        system_prompt_cost_nanos=round_half_even(prompt_units * system, divisor * prompt) if prompt else 0,
        uncached_prefix_tokens=uncached_prefix,
        uncached_prefix_cost_nanos=round_half_even(uncached_prefix * r_in, divisor),
        prefix_cache_saving_nanos=round_half_even(uncached_prefix * (r_in - r_cached), divisor),
    )
