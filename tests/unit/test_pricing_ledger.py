"""Per-event report amounts, checked against the catalog's own unit prices with Decimal arithmetic."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from costplane.pricing.catalog import default_catalog
from costplane.pricing.ledger import MIN_CACHEABLE_PREFIX_TOKENS, LedgerAmounts, ledger_amounts
from costplane.publisher.event import UsageEvent
from costplane.publisher.testing import usage_event

T0 = 1_767_225_600_000


def _nanos(usd: Decimal) -> int:
    return int((usd * 10**9).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _event(**kw: object) -> UsageEvent:
    return usage_event(
        **{"event_id": "e", "occurred_at": T0, "tenant": "t", "model": "gpt-4o", "request_id": "r", **kw}
    )


def test_amounts_follow_the_unit_prices() -> None:
    catalog = default_catalog()
    event = _event(
        input_tokens=3_000,
        cached_input_tokens=1_024,
        cache_write_tokens=0,
        output_tokens=50,
        system_prompt_tokens=2_500,
    )
    rates = catalog.explain("openai", "gpt-4o", prompt_tokens=4_024)
    assert rates is not None
    p_in, p_cached = rates["input"].usd, rates["cached_input"].usd
    prompt_usd = 3_000 * p_in + 1_024 * p_cached
    prefix = min(max(2_500 - 1_024, 0), 3_000)
    assert ledger_amounts(catalog, event) == LedgerAmounts(
        input_cost_nanos=_nanos(prompt_usd),
        cache_saved_nanos=_nanos(1_024 * (p_in - p_cached)),
        system_prompt_cost_nanos=_nanos(prompt_usd * 2_500 / 4_024),
        uncached_prefix_tokens=prefix,
        uncached_prefix_cost_nanos=_nanos(prefix * p_in),
        prefix_cache_saving_nanos=_nanos(prefix * (p_in - p_cached)),
    )


def test_short_system_prompts_are_not_cacheable_and_hits_record_what_they_avoided() -> None:
    catalog = default_catalog()
    short = ledger_amounts(catalog, _event(input_tokens=5_000, system_prompt_tokens=MIN_CACHEABLE_PREFIX_TOKENS - 1))
    assert short.uncached_prefix_tokens == 0 and short.prefix_cache_saving_nanos == 0
    assert short.system_prompt_cost_nanos > 0
    hit = _event(input_tokens=5_000, output_tokens=100, result_cache_hit=True)
    assert ledger_amounts(catalog, hit) == LedgerAmounts(result_cache_avoided_nanos=catalog.price_event(hit).cost_nanos)
    assert ledger_amounts(catalog, _event(model="no-such-model", input_tokens=10)) == LedgerAmounts()
