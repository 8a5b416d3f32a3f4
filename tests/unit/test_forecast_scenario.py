"""``costplane forecast scenario``: planned traffic priced per call shape, checked against hand arithmetic.

The catalog is written by the test (a LiteLLM map, as users import it), so every unit price the expected numbers
use is stated here: alpha-large $2.50 / $10 per 1M input / output tokens (cache reads $1.25, batch half price),
beta-small $0.15 / $0.60, gamma-tiered $3 / $15 up to 200k prompt tokens and $6 / $22.50 above.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.pricing.catalog import PriceCatalog, load_catalog
from costplane.reports.scenario import ScenarioError, call_shapes, compare, parse_scenario, price_scenario

PRICE_MAP = {
    "alpha-large": {
        "litellm_provider": "openai", "mode": "chat",
        "input_cost_per_token": "0.0000025", "output_cost_per_token": "0.00001",
        "cache_read_input_token_cost": "0.00000125",
        "input_cost_per_token_batches": "0.00000125", "output_cost_per_token_batches": "0.000005",
    },
    "beta-small": {
        "litellm_provider": "openai", "mode": "chat",
        "input_cost_per_token": "0.00000015", "output_cost_per_token": "0.0000006",
    },
    "gamma-tiered": {
        "litellm_provider": "gemini", "mode": "chat",
        "input_cost_per_token": "0.000003", "output_cost_per_token": "0.000015",
        "input_cost_per_token_above_200k_tokens": "0.000006", "output_cost_per_token_above_200k_tokens": "0.0000225",
    },
}  # fmt: skip


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICE_MAP))
    return path


@pytest.fixture
def catalog(catalog_file: Path) -> PriceCatalog:
    return load_catalog(catalog_file)


def test_worked_example_for_two_models_by_hand(catalog: PriceCatalog) -> None:
    plan = parse_scenario(sessions=500_000, messages=8, input_tokens=350, output_tokens=200)
    large, small = compare(catalog, plan, ["alpha-large", "beta-small"])
    calls = 500_000 * 8
    # alpha-large: 350 × $0.0000025 + 200 × $0.00001 = $0.000875 + $0.002 = $0.002875 a call
    assert large.calls == small.calls == calls == 4_000_000
    assert large.per_call_nanos == 2_875_000
    assert large.monthly_cost_nanos == 2_875_000 * calls == 11_500_000_000_000  # $11,500
    # beta-small: 350 × $0.00000015 + 200 × $0.0000006 = $0.0000525 + $0.00012 = $0.0001725 a call
    assert small.per_call_nanos == 172_500
    assert small.monthly_cost_nanos == 172_500 * calls == 690_000_000_000  # $690
    assert (large.input_tokens, large.cached_input_tokens, large.output_tokens) == (350 * calls, 0, 200 * calls)
    assert large.retry_attempts == 0 and large.retry_cost_nanos == 0


def test_batch_tier_uses_the_batch_prices(catalog: PriceCatalog) -> None:
    plan = parse_scenario(sessions=500_000, messages=8, input_tokens=350, output_tokens=200, tier="batch")
    cost = price_scenario(catalog, plan, "alpha-large")
    # 350 × $0.00000125 + 200 × $0.000005 = $0.0004375 + $0.001 = $0.0014375
    assert cost.per_call_nanos == 1_437_500
    assert cost.monthly_cost_nanos == 1_437_500 * 4_000_000


def test_cached_share_and_retries_billed_as_input(catalog: PriceCatalog) -> None:
    plan = parse_scenario(requests=1000, input_tokens=1000, output_tokens=100, cached_share="0.25", retry_rate="0.1")
    cost = price_scenario(catalog, plan, "alpha-large")
    # a call: 750 uncached × $0.0000025 + 250 cached × $0.00000125 + 100 × $0.00001
    #       = $0.001875 + $0.0003125 + $0.001 = $0.0031875
    # a retry (1000 × 0.1 = 100 of them): the same prompt, no output = $0.0021875
    assert cost.calls_cost_nanos == 1000 * 3_187_500
    assert cost.retry_attempts == 100
    assert cost.retry_cost_nanos == 100 * 2_187_500
    assert cost.monthly_cost_nanos == 3_187_500_000 + 218_750_000 == 3_406_250_000
    assert cost.per_call_nanos == 3_406_250
    assert cost.input_tokens == 1100 * 750
    assert cost.cached_input_tokens == 1100 * 250
    assert cost.output_tokens == 1000 * 100
    assert cost.retry_input_tokens == 100 * 1000


def test_growth_prices_each_turn_at_its_own_size_tier(catalog: PriceCatalog) -> None:
    plan = parse_scenario(
        sessions=10, messages=3, system_prompt_tokens=100_000, input_tokens=50_000, output_tokens=1000, growth=60_000
    )
    assert [s.input_tokens for s in call_shapes(plan)] == [150_000, 210_000, 270_000]
    cost = price_scenario(catalog, plan, "gamma-tiered")
    # turn 1: 150k ≤ 200k: 150 000 × $0.000003 + 1000 × $0.000015 = $0.45 + $0.015 = $0.465
    # turn 2: 210k > 200k: 210 000 × $0.000006 + 1000 × $0.0000225 = $1.26 + $0.0225 = $1.2825
    # turn 3: 270k > 200k: 270 000 × $0.000006 + 1000 × $0.0000225 = $1.62 + $0.0225 = $1.6425
    per_session = 465_000_000 + 1_282_500_000 + 1_642_500_000
    assert cost.monthly_cost_nanos == 10 * per_session == 33_900_000_000
    assert cost.calls == 30
    assert cost.per_call_nanos == 1_130_000_000
    # pricing the summed tokens would put all 630k prompt tokens in the upper tier: a different (wrong) number
    summed = catalog.price_tokens(None, "gamma-tiered", 630_000, output_tokens=3000).cost_nanos
    assert summed * 10 != cost.monthly_cost_nanos


def test_cached_share_rounds_half_even_to_whole_tokens() -> None:
    plan = parse_scenario(requests=1, input_tokens=5, cached_share="0.5")  # 2.5 → 2
    assert call_shapes(plan)[0].cached_input_tokens == 2
    plan = parse_scenario(requests=1, input_tokens=7, cached_share="0.5")  # 3.5 → 4
    assert call_shapes(plan)[0].cached_input_tokens == 4
    assert plan.cached_share == Fraction(1, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requests": -1}, "--requests must not be negative"),
        ({"sessions": 5, "messages": -2}, "--messages must not be negative"),
        ({"requests": 1, "input_tokens": -3}, "--input must not be negative"),
        ({"requests": 1, "cached_share": "1.5"}, "--cached-share must be between 0 and 1"),
        ({"requests": 1, "cached_share": "-0.1"}, "--cached-share must be between 0 and 1"),
        ({"requests": 1, "cached_share": "half"}, "--cached-share must be a number"),
        ({"requests": 1, "retry_rate": "-1"}, "--retry-rate must be between 0"),
        ({"requests": 1, "growth": 10}, "--growth is per turn of a session"),
        ({"requests": 1, "sessions": 1, "messages": 1}, "not both"),
        ({"sessions": 1}, "--messages is required"),
        ({}, "give --sessions N --messages M, or --requests N"),
        ({"requests": 1, "tier": "cheap"}, "--tier must be one of"),
    ],
)
def test_bad_scenarios_say_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(**kwargs)  # type: ignore[arg-type]


def test_unknown_model_is_an_error(catalog: PriceCatalog) -> None:
    plan = parse_scenario(requests=1, input_tokens=1)
    with pytest.raises(ScenarioError, match="unknown model 'delta'"):
        compare(catalog, plan, ["alpha-large", "delta"])


# -- the command ------------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_json_rows_per_model(catalog_file: Path) -> None:
    result = runner.invoke(
        build_app(),
        [
            "forecast",
            "scenario",
            "--sessions",
            "500000",
            "--messages",
            "8",
            "--input",
            "350",
            "--output",
            "200",
            "--model",
            "alpha-large",
            "--compare",
            "beta-small",
            "--catalog",
            str(catalog_file),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["model"] for r in rows] == ["alpha-large", "beta-small"]
    assert list(rows[0]) == [
        "model",
        "provider",
        "price_version",
        "tier",
        "calls",
        "retry_attempts",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "retry_input_tokens",
        "per_call_nanos",
        "per_call_usd",
        "retry_cost_nanos",
        "retry_cost_usd",
        "monthly_cost_nanos",
        "monthly_cost_usd",
    ]
    assert rows[0]["monthly_cost_nanos"] == 11_500_000_000_000
    assert rows[0]["monthly_cost_usd"] == "11500.000000000"
    assert rows[1]["per_call_usd"] == "0.000172500"


@pytest.mark.parametrize(
    "args",
    [
        ["--requests", "10", "--model", "nope"],
        ["--requests", "-10", "--model", "alpha-large"],
        ["--requests", "10", "--model", "alpha-large", "--cached-share", "2"],
        ["--requests", "10", "--model", "alpha-large", "--format", "xml"],
    ],
)
def test_cli_bad_input_is_one_line_exit_2(catalog_file: Path, args: list[str]) -> None:
    result = runner.invoke(build_app(), ["forecast", "scenario", *args, "--catalog", str(catalog_file)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_catalog_that_does_not_parse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(
        build_app(), ["forecast", "scenario", "--requests", "1", "--model", "alpha-large", "--catalog", str(bad)]
    )
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
