"""Catalog versions, overrides, LiteLLM import and the setting that picks the catalog."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costplane.pricing import catalog as catalog_module
from costplane.pricing.catalog import CatalogError, default_catalog, load_catalog, parse_catalog, parse_instant
from costplane.pricing.cost import TokenUsage
from costplane.pricing.litellm_import import (
    build_version,
    catalog_document,
    dump_catalog,
    is_litellm_map,
    load_json_exact,
)
from costplane.pricing.overrides import OverridesError, load_overrides, parse_overrides

D = Decimal
MS = 1000


def version(label: str, effective: str, models: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"price_version": label, "effective_from": effective, "models": models, **extra}


def model(inp: str, out: str, provider: str = "openai", **prices: str) -> dict[str, Any]:
    return {"provider": provider, "mode": "chat", "input_cost_per_token": inp, "output_cost_per_token": out, **prices}


@pytest.fixture
def versioned(tmp_path: Path) -> Path:
    doc = catalog_document(
        [
            version("v2@2026-06-01", "2026-06-01T00:00:00Z", {"m": model("0.000002", "0.000004")}),
            version("v1@2026-01-01", "2026-01-01", {"m": model("0.000001", "0.000003"), "old": model("1", "1")}),
            version("v3@2026-09-01", "2026-09-01T12:00:00+00:00", {"n": model("0.000005", "0")}, inherit=True),
        ]
    )
    path = tmp_path / "catalog.json"
    path.write_text(dump_catalog(doc))
    return path


def at(text: str) -> int:
    millis: int = parse_instant(text)
    return millis


def test_version_selected_by_occurred_at(versioned: Path) -> None:
    clock_now = at("2026-07-01")
    cat = load_catalog(versioned, clock=lambda: clock_now)
    usage = TokenUsage(input_tokens=1000)
    cases = [
        ("2025-12-31T23:59:59Z", "v1@2026-01-01", D("0.001")),  # before every version → the oldest
        ("2026-01-01T00:00:00Z", "v1@2026-01-01", D("0.001")),
        ("2026-05-31T23:59:59.999Z", "v1@2026-01-01", D("0.001")),
        ("2026-06-01T00:00:00Z", "v2@2026-06-01", D("0.002")),
        ("2026-09-01T11:59:59Z", "v2@2026-06-01", D("0.002")),
        ("2026-09-01T12:00:00Z", "v3@2026-09-01", D("0.002")),  # v3 inherits m from v2
    ]
    for moment, label, usd in cases:
        cost = cat.price("openai", "m", usage, occurred_at_ms=at(moment))
        assert (cost.price_version, cost.cost_usd) == (label, usd), moment
    # no occurred_at → the version in force at the injected clock
    assert cat.price("openai", "m", usage).price_version == "v2@2026-06-01"
    assert cat.price_version == "v2@2026-06-01"
    # a model that only exists in a later version is unpriced earlier, and a dropped model is unpriced later
    assert cat.price("openai", "n", usage, occurred_at_ms=at("2026-07-01")).unpriced is True
    assert cat.price("openai", "n", usage, occurred_at_ms=at("2026-10-01")).cost_usd == D("0.005")
    assert cat.price("openai", "old", usage, occurred_at_ms=at("2026-07-01")).unpriced is True


def test_instants() -> None:
    assert at("1970-01-01T00:00:01Z") == 1 * MS
    assert at("1970-01-02") == 86_400 * MS
    assert parse_instant(5) == 5
    with pytest.raises(CatalogError):
        parse_instant("yesterday")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


OVERRIDES_YAML = """
discounts:
  providers: {openai: 10}
  models: {"gpt-4o-mini*": 50}
models:
  acme-large:
    provider: acme
    input_cost_per_token: 0.000002
    output_cost_per_token: "0.000008"
  gpt-4o:
    provider: openai
    input_cost_per_token: 0.000001
    output_cost_per_token: 0.000001
"""


def test_overrides_discounts_and_custom_models(tmp_path: Path) -> None:
    base = load_catalog()
    over = load_catalog(overrides=write(tmp_path, "overrides.yaml", OVERRIDES_YAML))
    usage = TokenUsage(input_tokens=1000, cached_input_tokens=1000, output_tokens=1000)
    # provider discount: 10 % off every bucket of an OpenAI model
    o3_base, o3 = base.price("openai", "o3", usage), over.price("openai", "o3", usage)
    assert o3.cost_usd == o3_base.cost_usd * D("0.9")
    assert o3.price_version.startswith(o3_base.price_version + "+overrides.")
    # model pattern beats provider: 50 %, not 10 % (and not 55 %)
    mini_base, mini = base.price("openai", "gpt-4o-mini", usage), over.price("openai", "gpt-4o-mini", usage)
    assert mini.cost_usd == mini_base.cost_usd / 2
    # other providers untouched
    claude = TokenUsage(input_tokens=1000)
    assert (
        over.price("anthropic", "claude-sonnet-4-5", claude).cost_usd
        == base.price("anthropic", "claude-sonnet-4-5", claude).cost_usd
    )
    # custom models: their own prices, no discount, replacing a catalog entry of the same name
    assert base.price("acme", "acme-large", usage).unpriced is True
    assert over.price("acme", "acme-large", usage).cost_usd == 2000 * D("0.000002") + 1000 * D("0.000008")
    assert over.price("openai", "gpt-4o", usage).cost_usd == 3000 * D("0.000001")


def test_overrides_json_and_validation(tmp_path: Path) -> None:
    ok = load_overrides(write(tmp_path, "o.json", json.dumps({"discounts": {"providers": {"OpenAI": 12.5}}})))
    assert ok.discount_for("gpt-4o", "openai") == D("12.5")
    assert ok.discount_for("claude", "anthropic") is None
    bad: Any
    for bad in (
        {"discounts": {"providers": {"openai": 150}}},
        {"discounts": {"providers": {"openai": -1}}},
        {"discounts": {"vendors": {}}},
        {"models": {"x": {"input_cost_per_token": "abc"}}},
        {"models": {"x": {"input_cost_per_audio_token": "1"}}},
        {"models": {"x": {"provider": "a"}}},
        {"surprise": 1},
        ["not", "a", "mapping"],
    ):
        with pytest.raises(OverridesError):
            parse_overrides(bad)
    with pytest.raises(OverridesError):
        load_overrides(write(tmp_path, "bad.yaml", "discounts: [unclosed"))


LITELLM_MAP = {
    "sample_spec": {"litellm_provider": "one of", "mode": "one of", "input_cost_per_token": 0.0},
    "chat-model": {
        "litellm_provider": "acme",
        "mode": "chat",
        "max_input_tokens": 128000,
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "input_cost_per_audio_token": 1e-04,
        "search_context_cost_per_query": {"search_context_size_low": 0.01},
        "output_cost_per_token_ultrafast": 1e-04,
        "cache_creation_input_token_cost_above_12hr": 1e-04,
    },
    "embed": {"litellm_provider": "acme", "mode": "embedding", "input_cost_per_token": 1e-08},
    "resp": {
        "litellm_provider": "openai",
        "mode": "responses",
        "input_cost_per_token": 1.5e-04,
        "output_cost_per_token": 6e-04,
    },
    "img": {"litellm_provider": "acme", "mode": "image_generation", "input_cost_per_token": 1e-06},
    "per-second": {"litellm_provider": "acme", "mode": "chat", "input_cost_per_second": 1e-03},
    "null-price": {
        "litellm_provider": "acme",
        "mode": "chat",
        "input_cost_per_token": None,
        "output_cost_per_token": 1e-06,
    },
}


def test_litellm_conversion_keeps_token_prices_exactly() -> None:
    raw = load_json_exact(json.dumps(LITELLM_MAP))
    assert is_litellm_map(raw)
    doc, report = build_version(raw, source="litellm-9.9.9", effective_from=datetime(2026, 11, 22, tzinfo=UTC))
    assert doc["price_version"] == "litellm-9.9.9@2026-11-22"
    assert doc["effective_from"] == "2026-11-22T00:00:00Z"
    assert set(doc["models"]) == {"chat-model", "embed", "resp", "null-price"}
    assert doc["models"]["chat-model"] == {
        "provider": "acme",
        "mode": "chat",
        "input_cost_per_token": "0.0000025",
        "output_cost_per_token": "0.00001",
    }
    assert doc["models"]["null-price"] == {"provider": "acme", "mode": "chat", "output_cost_per_token": "0.000001"}
    assert report.kept == 4 and report.skipped_mode == 1 and report.skipped_unpriced == ["per-second"]
    # round trip through the file format loads back into a catalog with the same prices
    text = dump_catalog(catalog_document([doc]))
    (v,) = parse_catalog(load_json_exact(text))
    assert v.models["embed"]["input_cost_per_token"] == D("1E-8")
    assert not is_litellm_map(load_json_exact(text))


def test_raw_litellm_map_loads_as_a_catalog(tmp_path: Path) -> None:
    cat = load_catalog(write(tmp_path, "map.json", json.dumps(LITELLM_MAP)))
    assert cat.price_version.startswith("litellm-map.")
    assert cat.price("acme", "chat-model", TokenUsage(input_tokens=1000)).cost_usd == D("0.0025")


def test_catalog_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="neither"):
        load_catalog(write(tmp_path, "x.json", json.dumps({"hello": "world"})))
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(write(tmp_path, "y.json", "{"))
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.json")
    bad_price = catalog_document([version("v", "2026-01-01", {"m": model("-1", "0")})])
    with pytest.raises(CatalogError, match="non-negative"):
        parse_catalog(bad_price)
    with pytest.raises(CatalogError, match="no versions"):
        parse_catalog(catalog_document([]))


def test_default_catalog_honours_the_setting(versioned: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSTPLANE_PRICING_CATALOG", raising=False)
    monkeypatch.delenv("COSTPLANE_PRICING_OVERRIDES", raising=False)
    assert default_catalog().price_version.startswith("litellm-")
    assert default_catalog() is default_catalog()  # loaded once per process
    monkeypatch.setenv("COSTPLANE_PRICING_CATALOG", str(versioned))
    assert default_catalog().versions[0].price_version == "v1@2026-01-01"
    catalog_module._cached_catalog.cache_clear()


def test_lookup_cache_is_bounded() -> None:
    cat = load_catalog()
    cat._max_cached = 10
    for i in range(50):
        cat.price("x", f"garbage-{i}", TokenUsage(input_tokens=1))
    assert len(cat._compiled) <= 10


def test_tiered_pricing_becomes_size_tiers() -> None:
    entry = {
        "litellm_provider": "dashscope",
        "mode": "chat",
        "tiered_pricing": [
            {"range": [0, 32000.0], "input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06},
            {
                "range": [32000.0, 128000.0],
                "input_cost_per_token": 2e-06,
                "output_cost_per_token": 8e-06,
                "cache_read_input_token_cost": 4e-07,
            },
        ],
    }
    raw = load_json_exact(json.dumps({"tiered": entry}))
    doc, _ = build_version(raw, source="t", effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    (v,) = parse_catalog(catalog_document([doc]))
    cat = catalog_module.PriceCatalog([v])
    # all-or-nothing: 32 000 stays in the first range (start < prompt <= end), 32 001 bills everything at the second
    assert cat.price("dashscope", "tiered", TokenUsage(input_tokens=32_000, output_tokens=10)).cost_usd == (
        32_000 * D("1e-6") + 10 * D("4e-6")
    )
    assert cat.price("dashscope", "tiered", TokenUsage(input_tokens=32_000, cached_input_tokens=1)).cost_usd == (
        32_000 * D("2e-6") + 1 * D("4e-7")
    )
    # a tier without a cache price bills cache reads at that tier's input price; beyond the last range stays last
    assert cat.price("dashscope", "tiered", TokenUsage(cached_input_tokens=100)).cost_usd == 100 * D("1e-6")
    assert cat.price("dashscope", "tiered", TokenUsage(input_tokens=500_000)).cost_usd == 500_000 * D("2e-6")


def test_fireworks_default_cache_read_is_half_the_input_price() -> None:
    raw = load_json_exact(
        json.dumps(
            {
                "fw": {"litellm_provider": "fireworks_ai", "mode": "chat", "input_cost_per_token": 9e-07},
                "fw-own": {
                    "litellm_provider": "fireworks_ai",
                    "mode": "chat",
                    "input_cost_per_token": 9e-07,
                    "cache_read_input_token_cost": 1e-07,
                },
            }
        )
    )
    doc, _ = build_version(raw, source="t", effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    assert doc["models"]["fw"]["cache_read_input_token_cost"] == "0.00000045"
    assert doc["models"]["fw-own"]["cache_read_input_token_cost"] == "0.0000001"


OFF_PEAK = {
    "litellm_provider": "deepseek",
    "mode": "chat",
    "input_cost_per_token": 2e-06,
    "output_cost_per_token": 8e-06,
    "input_cost_per_token_above_128k_tokens": 4e-06,
    "off_peak_pricing": {
        "input_cost_per_token": 5e-07,
        "windows": [
            {"hours_utc": ["16:30-00:30"], "weekdays": ["mon", "tue", "wed", "thu", "fri"]},
            {"hours_utc": "00:00-00:00", "weekdays": [6, 7]},
        ],
    },
}


@pytest.mark.parametrize(
    ("moment", "off_peak"),
    [
        ("2026-11-23T16:29:59Z", False),  # Monday, just before the window
        ("2026-11-23T16:30:00Z", True),  # start inclusive
        ("2026-11-24T00:29:00Z", True),  # wraps past midnight (Tuesday counts by its own weekday)
        ("2026-11-24T00:30:00Z", False),  # end exclusive
        ("2026-11-28T12:00:00Z", True),  # Saturday: all day
        ("2026-11-27T12:00:00Z", False),  # Friday noon
    ],
)
def test_off_peak_windows(moment: str, off_peak: bool) -> None:
    cat = load_catalog_from_map({"dsk": OFF_PEAK})
    cost = cat.price("deepseek", "dsk", TokenUsage(input_tokens=1000, output_tokens=10), occurred_at_ms=at(moment))
    expected_input = D("5e-7") if off_peak else D("2e-6")
    assert cost.cost_usd == 1000 * expected_input + 10 * D("8e-6")
    # off-peak replaces the long-context price too (the whole request at the off-peak rate), as in LiteLLM
    big = cat.price("deepseek", "dsk", TokenUsage(input_tokens=200_000), occurred_at_ms=at(moment))
    assert big.cost_usd == 200_000 * (D("5e-7") if off_peak else D("4e-6"))


def test_off_peak_weekday_timezone_and_guard() -> None:
    block = dict(OFF_PEAK)
    block["off_peak_pricing"] = {
        "input_cost_per_token": 5e-07,
        "weekday_timezone": "Asia/Shanghai",
        "windows": [{"hours_utc": "16:30-00:30", "weekdays": [1]}],
    }
    cat = load_catalog_from_map({"dsk": block})
    usage = TokenUsage(input_tokens=1000)
    # Sunday 17:00 UTC is Monday 01:00 in Shanghai: off-peak by the vendor's calendar
    assert cat.price("deepseek", "dsk", usage, occurred_at_ms=at("2026-11-22T17:00:00Z")).cost_usd == D("0.0005")
    assert cat.price("deepseek", "dsk", usage, occurred_at_ms=at("2026-11-23T17:00:00Z")).cost_usd == D("0.002")
    # the guard's worst case never assumes the cheaper window
    assert cat.worst_case_nanos("deepseek", "dsk", 1000, 0) == 2_000_000


def load_catalog_from_map(models: dict[str, Any]) -> catalog_module.PriceCatalog:
    raw = load_json_exact(json.dumps(models))
    doc, _ = build_version(raw, source="t", effective_from=datetime(2026, 1, 1, tzinfo=UTC))
    return catalog_module.PriceCatalog(parse_catalog(catalog_document([doc])))
