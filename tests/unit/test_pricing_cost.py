"""Cost of a usage record, table-driven against independent computations from the raw price numbers.

Two sources of truth, neither going through costplane's rate resolution:
* the shipped catalog's JSON, read here with ``json`` + ``Decimal`` and combined by hand per case;
* prices the providers publish (e.g. gpt-4o $2.50 / $10 per million), written as literals;
plus a synthetic LiteLLM-format map for the fallback rules (50 % batch, cache-hit, reasoning, size tiers) whose
expected behaviour follows LiteLLM's cost calculator (strict ``>`` thresholds, inclusive for xAI, priority keys
falling back to the standard key of the same size tier, reasoning billed at a tier-specific output price).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costplane.pricing.catalog import PriceCatalog, load_catalog, parse_instant, shipped_catalog_path
from costplane.pricing.cost import TokenUsage, decimal_from_units, round_half_even

D = Decimal
M = Decimal(1_000_000)


@pytest.fixture(scope="module")
def shipped() -> PriceCatalog:
    return load_catalog()


@pytest.fixture(scope="module")
def raw_prices() -> dict[str, dict[str, Decimal]]:
    document = json.loads(shipped_catalog_path().read_text())
    (version,) = document["versions"]
    return {
        name: {
            k: D(v)
            for k, v in entry.items()
            if k not in ("provider", "mode", "threshold_inclusive", "off_peak_pricing")
        }
        for name, entry in version["models"].items()
    }


def nanos(usd: Decimal) -> int:
    return int((usd * 10**9).quantize(D(1), rounding="ROUND_HALF_EVEN"))


# (id, provider, model, usage, tier, {bucket: (tokens, [field, factor])})
SHIPPED_CASES: list[tuple[str, str, str, TokenUsage, str | None, dict[str, tuple[int, str, Decimal]]]] = [
    (
        "plain",
        "openai",
        "gpt-4o",
        TokenUsage(input_tokens=1200, output_tokens=350),
        None,
        {"input": (1200, "input_cost_per_token", D(1)), "output": (350, "output_cost_per_token", D(1))},
    ),
    (
        "cached",
        "openai",
        "gpt-4o",
        TokenUsage(input_tokens=200, cached_input_tokens=1800, output_tokens=50),
        "standard",
        {
            "input": (200, "input_cost_per_token", D(1)),
            "cached_input": (1800, "cache_read_input_token_cost", D(1)),
            "output": (50, "output_cost_per_token", D(1)),
        },
    ),
    (
        "cache-write",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        TokenUsage(input_tokens=10, cached_input_tokens=4000, cache_write_tokens=2500, output_tokens=300),
        None,
        {
            "input": (10, "input_cost_per_token", D(1)),
            "cached_input": (4000, "cache_read_input_token_cost", D(1)),
            "cache_write": (2500, "cache_creation_input_token_cost", D(1)),
            "output": (300, "output_cost_per_token", D(1)),
        },
    ),
    (
        "cache-write-1h",
        "anthropic",
        "claude-sonnet-4-5-20250929",
        TokenUsage(input_tokens=10, cache_write_1h_tokens=2500),
        None,
        {
            "input": (10, "input_cost_per_token", D(1)),
            "cache_write_1h": (2500, "cache_creation_input_token_cost_above_1hr", D(1)),
        },
    ),
    (
        "batch-explicit",
        "openai",
        "gpt-4o",
        TokenUsage(input_tokens=1000, output_tokens=1000),
        "batch",
        {
            "input": (1000, "input_cost_per_token_batches", D(1)),
            "output": (1000, "output_cost_per_token_batches", D(1)),
        },
    ),
    (
        "batch-50%-fallback-for-cache-read",
        "openai",
        "gpt-4o",
        TokenUsage(cached_input_tokens=1000),
        "batch",
        {"cached_input": (1000, "cache_read_input_token_cost", D("0.5"))},
    ),
    (
        "priority",
        "openai",
        "gpt-5",
        TokenUsage(input_tokens=900, cached_input_tokens=100, output_tokens=40, reasoning_tokens=500),
        "priority",
        {
            "input": (900, "input_cost_per_token_priority", D(1)),
            "cached_input": (100, "cache_read_input_token_cost_priority", D(1)),
            "output": (40, "output_cost_per_token_priority", D(1)),
            "reasoning": (500, "output_cost_per_token_priority", D(1)),
        },
    ),
    (
        "flex",
        "openai",
        "o3",
        TokenUsage(input_tokens=900, cached_input_tokens=100, output_tokens=40, reasoning_tokens=500),
        "flex",
        {
            "input": (900, "input_cost_per_token_flex", D(1)),
            "cached_input": (100, "cache_read_input_token_cost_flex", D(1)),
            "output": (40, "output_cost_per_token_flex", D(1)),
            "reasoning": (500, "output_cost_per_token_flex", D(1)),
        },
    ),
    (
        "long-context-above-200k",
        "gemini",
        "gemini/gemini-2.5-pro",
        TokenUsage(input_tokens=190_000, cached_input_tokens=20_000, output_tokens=2000, reasoning_tokens=3000),
        None,
        {
            "input": (190_000, "input_cost_per_token_above_200k_tokens", D(1)),
            "cached_input": (20_000, "cache_read_input_token_cost_above_200k_tokens", D(1)),
            "output": (2000, "output_cost_per_token_above_200k_tokens", D(1)),
            "reasoning": (3000, "output_cost_per_token_above_200k_tokens", D(1)),
        },
    ),
    (
        "long-context-batch",
        "gemini",
        "gemini/gemini-2.5-pro",
        TokenUsage(input_tokens=250_000, output_tokens=100),
        "batch",
        {
            "input": (250_000, "input_cost_per_token_above_200k_tokens_batches", D(1)),
            "output": (100, "output_cost_per_token_above_200k_tokens_batches", D(1)),
        },
    ),
    (
        "reasoning-price",
        "gemini",
        "gemini/gemini-2.5-flash",
        TokenUsage(input_tokens=100, output_tokens=10, reasoning_tokens=1000),
        None,
        {
            "input": (100, "input_cost_per_token", D(1)),
            "output": (10, "output_cost_per_token", D(1)),
            "reasoning": (1000, "output_cost_per_reasoning_token", D(1)),
        },
    ),
    (
        "embedding",
        "openai",
        "text-embedding-3-small",
        TokenUsage(input_tokens=12345),
        None,
        {"input": (12345, "input_cost_per_token", D(1))},
    ),
]


@pytest.mark.parametrize(
    ("provider", "model", "usage", "tier", "expected"),
    [case[1:] for case in SHIPPED_CASES],
    ids=[case[0] for case in SHIPPED_CASES],
)
def test_cost_matches_independent_computation_from_catalog_numbers(
    shipped: PriceCatalog,
    raw_prices: dict[str, dict[str, Decimal]],
    provider: str,
    model: str,
    usage: TokenUsage,
    tier: str | None,
    expected: dict[str, tuple[int, str, Decimal]],
) -> None:
    prices = raw_prices[model]
    want = {bucket: tokens * prices[field] * factor for bucket, (tokens, field, factor) in expected.items()}
    total = sum(want.values(), D(0))
    cost = shipped.price(provider, model, usage, service_tier=tier)
    assert cost.unpriced is False
    assert cost.cost_usd == total
    assert cost.cost_nanos == nanos(total)
    assert {k: v for k, v in cost.breakdown.items() if v} == {k: v for k, v in want.items() if v}
    assert cost.price_version.startswith("litellm-")


@pytest.mark.parametrize(
    ("provider", "model", "usage", "tier", "usd"),
    [
        # Published list prices (USD per million tokens), independent of any catalog file.
        ("openai", "gpt-4o", TokenUsage(input_tokens=1_000_000), None, D("2.50")),
        ("openai", "gpt-4o", TokenUsage(output_tokens=1_000_000), None, D("10")),
        ("openai", "gpt-4o", TokenUsage(cached_input_tokens=1_000_000), None, D("1.25")),
        ("openai", "gpt-4o", TokenUsage(input_tokens=1_000_000), "batch", D("1.25")),
        ("openai", "gpt-4o-mini", TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000), None, D("0.75")),
        ("anthropic", "claude-sonnet-4-5", TokenUsage(input_tokens=1_000_000), None, D("3")),
        ("anthropic", "claude-sonnet-4-5", TokenUsage(cache_write_tokens=1_000_000), None, D("3.75")),
        ("anthropic", "claude-sonnet-4-5", TokenUsage(cache_write_1h_tokens=1_000_000), None, D("6")),
        ("anthropic", "claude-sonnet-4-5", TokenUsage(cached_input_tokens=1_000_000), None, D("0.30")),
        ("gemini", "gemini-2.5-pro", TokenUsage(input_tokens=1_000_000), None, D("2.50")),  # > 200k prompt
        ("gemini", "gemini-2.5-pro", TokenUsage(input_tokens=100_000), None, D("0.125")),
        ("openai", "text-embedding-3-small", TokenUsage(input_tokens=1_000_000), None, D("0.02")),
    ],
)
def test_published_list_prices(
    shipped: PriceCatalog, provider: str, model: str, usage: TokenUsage, tier: str | None, usd: Decimal
) -> None:
    assert shipped.price(provider, model, usage, service_tier=tier).cost_usd == usd


# -- fallback rules on a synthetic LiteLLM-format map --------------------------------------------------------------
SYNTHETIC: dict[str, Any] = {
    "sample_spec": {"litellm_provider": "one of ...", "mode": "one of ...", "input_cost_per_token": 0.0},
    "tiered": {
        "litellm_provider": "acme",
        "mode": "chat",
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 2e-06,
        "cache_read_input_token_cost": 1e-07,
        "input_cost_per_token_above_128k_tokens": 2e-06,
        "output_cost_per_token_above_128k_tokens": 4e-06,
        "cache_read_input_token_cost_above_128k_tokens": 2e-07,
        "input_cost_per_token_above_200k_tokens": 3e-06,
        "input_cost_per_token_batches": 4e-07,
        "input_cost_per_token_priority": 1.5e-06,
        "input_cost_per_token_above_128k_tokens_priority": 5e-06,
    },
    "plain": {
        "litellm_provider": "acme",
        "mode": "chat",
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 3e-06,
    },
    "deepseek-like": {
        "litellm_provider": "deepseek",
        "mode": "chat",
        "input_cost_per_token": 2.7e-07,
        "input_cost_per_token_cache_hit": 7e-08,
        "output_cost_per_token": 1.1e-06,
    },
    "reasoner": {
        "litellm_provider": "acme",
        "mode": "chat",
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 2e-06,
        "output_cost_per_reasoning_token": 5e-06,
        "output_cost_per_token_priority": 4e-06,
    },
    "xai/grok-like": {
        "litellm_provider": "xai",
        "mode": "chat",
        "input_cost_per_token": 2e-07,
        "output_cost_per_token": 5e-07,
        "input_cost_per_token_above_128k_tokens": 4e-07,
        "output_cost_per_token_above_128k_tokens": 1e-06,
    },
    "nanoprice": {"litellm_provider": "acme", "mode": "chat", "input_cost_per_token": "0.0000000015"},
    "image-model": {"litellm_provider": "acme", "mode": "image_generation", "input_cost_per_token": 1e-06},
    "per-char": {"litellm_provider": "acme", "mode": "chat", "input_cost_per_character": 1e-06},
}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> PriceCatalog:
    path = tmp_path_factory.mktemp("synthetic") / "litellm.json"
    path.write_text(json.dumps(SYNTHETIC))
    return load_catalog(path)


SYNTHETIC_CASES: list[tuple[str, str, TokenUsage, str | None, Decimal]] = [
    (
        "plain: no cache prices → cache read and write bill as input",
        "plain",
        TokenUsage(input_tokens=10, cached_input_tokens=20, cache_write_tokens=30, output_tokens=5),
        None,
        60 * D("1e-6") + 5 * D("3e-6"),
    ),
    ("plain: no reasoning price → output price", "plain", TokenUsage(reasoning_tokens=7), None, 7 * D("3e-6")),
    (
        "plain: missing batch → 50% of each bucket",
        "plain",
        TokenUsage(input_tokens=10, cached_input_tokens=10, output_tokens=10),
        "batch",
        (20 * D("1e-6") + 10 * D("3e-6")) / 2,
    ),
    (
        "plain: missing priority/flex → standard",
        "plain",
        TokenUsage(input_tokens=10, output_tokens=10),
        "priority",
        10 * D("1e-6") + 10 * D("3e-6"),
    ),
    ("plain: flex → standard", "plain", TokenUsage(input_tokens=10), "flex", 10 * D("1e-6")),
    (
        "cache_hit fallback",
        "deepseek-like",
        TokenUsage(input_tokens=100, cached_input_tokens=1000),
        None,
        100 * D("2.7e-7") + 1000 * D("7e-8"),
    ),
    (
        "threshold is strict: exactly 128k stays flat",
        "tiered",
        TokenUsage(input_tokens=128_000, output_tokens=10),
        None,
        128_000 * D("1e-6") + 10 * D("2e-6"),
    ),
    (
        "above 128k: every bucket at its 128k price",
        "tiered",
        TokenUsage(input_tokens=128_000, cached_input_tokens=1, output_tokens=10),
        None,
        128_000 * D("2e-6") + 1 * D("2e-7") + 10 * D("4e-6"),
    ),
    (
        "above 200k: input at 200k, output keeps its largest priced tier (128k)",
        "tiered",
        TokenUsage(input_tokens=200_001, output_tokens=10),
        None,
        200_001 * D("3e-6") + 10 * D("4e-6"),
    ),
    ("explicit batch price beats 50%", "tiered", TokenUsage(input_tokens=1000), "batch", 1000 * D("4e-7")),
    (
        "batch above a size tier: 50% of the size-tier price",
        "tiered",
        TokenUsage(input_tokens=150_000),
        "batch",
        150_000 * D("2e-6") / 2,
    ),
    (
        "priority above a size tier: explicit",
        "tiered",
        TokenUsage(input_tokens=150_000),
        "priority",
        150_000 * D("5e-6"),
    ),
    (
        "priority at 200k without a priority key → standard 200k price",
        "tiered",
        TokenUsage(input_tokens=250_000),
        "priority",
        250_000 * D("3e-6"),
    ),
    ("priority flat", "tiered", TokenUsage(input_tokens=1000), "priority", 1000 * D("1.5e-6")),
    (
        "reasoning price",
        "reasoner",
        TokenUsage(output_tokens=10, reasoning_tokens=100),
        None,
        10 * D("2e-6") + 100 * D("5e-6"),
    ),
    (
        "reasoning under priority follows the priority output price",
        "reasoner",
        TokenUsage(output_tokens=10, reasoning_tokens=100),
        "priority",
        110 * D("4e-6"),
    ),
    (
        "reasoning under batch: 50% of the reasoning price",
        "reasoner",
        TokenUsage(reasoning_tokens=100),
        "batch",
        100 * D("5e-6") / 2,
    ),
    (
        "xAI bills the tier from the threshold on (inclusive)",
        "xai/grok-like",
        TokenUsage(input_tokens=128_000),
        None,
        128_000 * D("4e-7"),
    ),
    ("provider prefix resolved", "grok-like", TokenUsage(input_tokens=1), None, D("2e-7")),
]


@pytest.mark.parametrize(
    ("model", "usage", "tier", "usd"),
    [c[1:] for c in SYNTHETIC_CASES],
    ids=[c[0] for c in SYNTHETIC_CASES],
)
def test_fallback_rules(synthetic: PriceCatalog, model: str, usage: TokenUsage, tier: str | None, usd: Decimal) -> None:
    provider = "xai" if "grok" in model else "acme"
    cost = synthetic.price(provider, model, usage, service_tier=tier)
    assert cost.unpriced is False
    assert cost.cost_usd == usd
    assert cost.cost_nanos == nanos(usd)
    assert sum(cost.breakdown.values(), D(0)) == usd


def test_rounding_happens_once_half_even(synthetic: PriceCatalog) -> None:
    # 1.5e-9 USD per token: 1 token = 1.5 nano → 2; 5 tokens = 7.5 → 8; 3 tokens = 4.5 → 4 (half to even)
    assert [synthetic.price("acme", "nanoprice", TokenUsage(input_tokens=n)).cost_nanos for n in (1, 3, 5)] == [2, 4, 8]
    assert synthetic.price("acme", "nanoprice", TokenUsage(input_tokens=1)).cost_usd == D("0.0000000015")
    # a sum of per-bucket roundings would differ: one token in each of two buckets = 3.0 nano, not 2 + 2
    two_buckets = synthetic.price("acme", "nanoprice", TokenUsage(input_tokens=1, cache_write_tokens=1))
    assert two_buckets.cost_nanos == 3


def test_unknown_model_is_unpriced_not_free(synthetic: PriceCatalog, shipped: PriceCatalog) -> None:
    for catalog, model in ((synthetic, "image-model"), (synthetic, "per-char"), (shipped, "no-such-model-xyz")):
        cost = catalog.price("acme", model, TokenUsage(input_tokens=1000, output_tokens=1000))
        assert cost.unpriced is True and cost.cost_nanos == 0 and cost.cost_usd == 0
        assert cost.price_version
        assert catalog.is_priced("acme", model) is False
        assert catalog.worst_case_nanos("acme", model, 100, 100) == 0


def test_model_lookup_order(shipped: PriceCatalog) -> None:
    direct = shipped.lookup("openai", "gpt-4o")
    assert direct is not None and direct.name == "gpt-4o"
    prefixed = shipped.lookup("openai", "openai/gpt-4o")
    assert prefixed is not None and prefixed.name in ("openai/gpt-4o", "gpt-4o")
    gemini = shipped.lookup("gemini", "gemini-2.5-pro")
    assert gemini is not None and gemini.name == "gemini/gemini-2.5-pro"  # provider-prefixed beats another provider
    alias = shipped.lookup("google", "gemini-2.5-pro")
    assert alias is not None and alias.name == "gemini/gemini-2.5-pro"
    assert shipped.lookup("", "GPT-4o") is not None  # case-insensitive last resort


def test_worst_case_is_an_upper_bound(shipped: PriceCatalog) -> None:
    usage = TokenUsage(input_tokens=1000, output_tokens=500)
    exact = shipped.price("openai", "gpt-4o", usage)
    assert shipped.worst_case_nanos("openai", "gpt-4o", 1000, 500) == exact.cost_nanos
    reasoner = shipped.worst_case_nanos("gemini", "gemini/gemini-2.5-flash", 10, 1000)
    assert reasoner == shipped.price("gemini", "gemini/gemini-2.5-flash", TokenUsage(10, 0, 0, 0, 1000)).cost_nanos
    assert shipped.worst_case_nanos("openai", "gpt-4o", 1000, 500, "batch") < exact.cost_nanos


def test_token_usage_refuses_bad_counts() -> None:
    for bad in ({"input_tokens": -1}, {"output_tokens": 1.5}, {"reasoning_tokens": None}):
        with pytest.raises(ValueError):
            TokenUsage(**bad)  # type: ignore[arg-type]


def test_integer_helpers() -> None:
    assert round_half_even(25, 10) == 2 and round_half_even(35, 10) == 4 and round_half_even(26, 10) == 3
    assert decimal_from_units(1_500_000_000, 18) == D("1.5E-9")
    assert str(decimal_from_units(0, 18)) == "0"


def test_the_hot_path_prices_as_the_full_call_does(shipped: PriceCatalog) -> None:
    """price_tokens (the worker's per-event call, compiled rates cached per model) agrees with price on many
    counts; its cost per event is a row of ``bench.bench_hotpaths``."""
    for i in range(0, 20_000, 997):
        fast = shipped.price_tokens("openai", "gpt-4o", 1000 + i, 200, 0, 300, 0)
        full = shipped.price("openai", "gpt-4o", TokenUsage(1000 + i, 200, 0, 300, 0))
        assert fast.cost_nanos == full.cost_nanos > 0


def test_catalog_file_is_what_ships(shipped: PriceCatalog) -> None:
    assert Path(shipped_catalog_path()).stat().st_size < 2_000_000
    assert len(shipped.versions) == 1 and shipped.versions[0].source.get("name", "").startswith("litellm-")


def test_price_event_reads_a_usage_event(shipped: PriceCatalog) -> None:
    from costplane.publisher.event import UsageEvent

    event = UsageEvent(
        event_id="e1",
        occurred_at=parse_instant("2026-11-23T12:00:00Z"),
        tenant="t",
        provider="openai",
        model="gpt-4o",
        request_id="r1",
        attempt=1,
        status="ok",
        input_tokens=1000,
        cached_input_tokens=200,
        output_tokens=100,
        reasoning_tokens=0,
        service_tier="batch",
    )
    expected = shipped.price("openai", "gpt-4o", TokenUsage(1000, 200, 0, 100, 0), service_tier="batch")
    assert shipped.price_event(event) == expected
    assert expected.cost_usd == 1000 * D("1.25e-6") + 200 * D("0.625e-6") + 100 * D("5e-6")
