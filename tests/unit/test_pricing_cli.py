"""``costplane price``, ``costplane prices import`` and ``costplane tokens`` through Typer's CliRunner."""

from __future__ import annotations

import io
import json
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.pricing.catalog import load_catalog
from costplane.pricing.cost import TokenUsage

runner = CliRunner()

LITELLM_MAP = {
    "sample_spec": {"litellm_provider": "one of", "mode": "one of"},
    "acme-chat": {
        "litellm_provider": "acme",
        "mode": "chat",
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 3e-07,
        "cache_creation_input_token_cost": 3.75e-06,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
    },
}


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(build_app(), list(args), input=stdin)
    return result.exit_code, result.stdout


def test_price_json_has_exactly_the_documented_keys() -> None:
    code, out = invoke(
        "price", "gpt-4o", "--provider", "openai", "--input", "1000", "--cached-input", "500",
        "--cache-write", "0", "--output", "200", "--reasoning", "0", "--json",
    )  # fmt: skip
    assert code == 0, out
    doc = json.loads(out)
    assert list(doc) == ["model", "price_version", "cost_usd", "cost_nanos", "breakdown", "unpriced"]
    expected = load_catalog().price("openai", "gpt-4o", TokenUsage(1000, 500, 0, 200, 0))
    assert doc["cost_usd"] == str(expected.cost_usd) == "0.005125"
    assert doc["cost_nanos"] == expected.cost_nanos == 5_125_000
    assert doc["breakdown"] == {
        "input": "0.0025",
        "cached_input": "0.000625",
        "cache_write": "0",
        "output": "0.002",
        "reasoning": "0",
    }
    assert doc["unpriced"] is False and doc["price_version"].startswith("litellm-")


def test_price_with_a_litellm_map_as_catalog_and_tiers(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(LITELLM_MAP))
    code, out = invoke(
        "price", "acme-chat", "--input", "199000", "--cache-write", "1001", "--output", "1000",
        "--tier", "batch", "--catalog", str(path), "--json",
    )  # fmt: skip
    assert code == 0, out
    doc = json.loads(out)
    # prompt 200 001 > 200k: the size tier for every bucket priced at it (the cache write has no 200k price, so its
    # flat price stays, as in LiteLLM); batch: 50 % (no batch prices in the map)
    want = (199_000 * Decimal("6e-6") + 1001 * Decimal("3.75e-6") + 1000 * Decimal("2.25e-5")) / 2
    assert Decimal(doc["cost_usd"]) == want
    assert doc["price_version"].startswith("litellm-map.")


def test_price_human_output_and_unknown_model() -> None:
    code, out = invoke("price", "gpt-4o", "--input", "1000", "--output", "10")
    assert code == 0 and "input_cost_per_token" in out and "nano-USD" in out
    code, out = invoke("price", "no-such-model", "--input", "10", "--json")
    assert code == 0 and json.loads(out)["unpriced"] is True and json.loads(out)["cost_nanos"] == 0
    code, _ = invoke("price", "gpt-4o", "--tier", "turbo")
    assert code != 0


def test_prices_import_from_json_and_wheel_then_append(tmp_path: Path) -> None:
    src = tmp_path / "model_prices.json"
    src.write_text(json.dumps(LITELLM_MAP))
    out = tmp_path / "catalog.json"
    code, _ = invoke("prices", "import", str(src), "--out", str(out), "--effective-from", "2026-01-01")
    assert code == 0
    doc = json.loads(out.read_text())
    assert [v["price_version"] for v in doc["versions"]] == ["litellm@2026-01-01"]

    wheel = tmp_path / "litellm-1.2.3-py3-none-any.whl"
    changed = json.loads(json.dumps(LITELLM_MAP))
    changed["acme-chat"]["input_cost_per_token"] = 1e-06
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("litellm/model_prices_and_context_window_backup.json", json.dumps(changed))
        zf.writestr("litellm-1.2.3.dist-info/METADATA", "Metadata-Version: 2.1\nName: litellm\nVersion: 1.2.3\n")
    wheel.write_bytes(buffer.getvalue())
    code, _ = invoke("prices", "import", str(wheel), "--out", str(out), "--effective-from", "2026-06-01", "--append")
    assert code == 0
    doc = json.loads(out.read_text())
    assert [v["price_version"] for v in doc["versions"]] == ["litellm@2026-01-01", "litellm-1.2.3@2026-06-01"]
    # history re-rates: the same call costs what it cost at the time
    for when, usd in (("2026-03-01T00:00:00Z", "0.003"), ("2026-07-01T00:00:00Z", "0.001")):
        code, text = invoke("price", "acme-chat", "--input", "1000", "--catalog", str(out), "--at", when, "--json")
        assert code == 0 and json.loads(text)["cost_usd"] == usd


def test_prices_import_to_stdout_and_rejects_non_maps(tmp_path: Path) -> None:
    src = tmp_path / "m.json"
    src.write_text(json.dumps(LITELLM_MAP))
    code, out = invoke("prices", "import", str(src))
    assert code == 0 and json.loads(out)["format"] == "costplane-price-catalog"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": 1}))
    code, _ = invoke("prices", "import", str(bad))
    assert code == 2


@pytest.mark.parametrize(
    ("stdin", "model", "tokens", "estimated", "kind"),
    [
        ("hello world", "gpt-4o", 2, False, "text"),
        ('[{"role": "user", "content": "hello world"}]', "gpt-4o", 3 + 1 + 2 + 3, False, "messages"),
        ("hello world", "claude-3-5-sonnet", 2, True, "text"),
    ],
)
def test_tokens_command(stdin: str, model: str, tokens: int, estimated: bool, kind: str) -> None:
    code, out = invoke("tokens", "--model", model, "--json", stdin=stdin)
    assert code == 0, out
    doc = json.loads(out)
    assert (doc["tokens"], doc["estimated"], doc["input"]) == (tokens, estimated, kind)


def test_tokens_from_file(tmp_path: Path) -> None:
    path = tmp_path / "prompt.txt"
    path.write_text("hello world")
    code, out = invoke("tokens", "-m", "gpt-4", str(path))
    assert code == 0 and out.startswith("2 tokens")


def test_price_honours_the_catalog_and_overrides_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from costplane.pricing import catalog as catalog_module

    path = tmp_path / "prices.json"
    path.write_text(json.dumps(LITELLM_MAP))
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("discounts:\n  providers: {acme: 10}\n")
    monkeypatch.setenv("COSTPLANE_PRICING_CATALOG", str(path))
    catalog_module._cached_catalog.cache_clear()
    try:
        code, out = invoke("price", "acme-chat", "--input", "1000", "--json")
        assert code == 0 and json.loads(out)["cost_usd"] == "0.003"
        monkeypatch.setenv("COSTPLANE_PRICING_OVERRIDES", str(overrides))
        code, out = invoke("price", "acme-chat", "--input", "1000", "--json")
        doc = json.loads(out)
        assert code == 0 and doc["cost_usd"] == "0.0027" and "+overrides." in doc["price_version"]
    finally:
        catalog_module._cached_catalog.cache_clear()


def test_prices_show_and_versions() -> None:
    code, out = invoke("prices", "show", "gemini-2.5-pro", "--provider", "gemini", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["name"] == "gemini/gemini-2.5-pro" and doc["thresholds"] == [200_000]
    assert doc["per_million"]["standard"]["input"] == "1.25"
    assert doc["per_million"]["standard >200k"]["input"] == "2.5"
    assert doc["per_million"]["batch >200k"]["output"] == "7.5"
    code, out = invoke("prices", "show", "no-such-model", "--json")
    assert code == 1 and json.loads(out)["unpriced"] is True
    code, out = invoke("prices", "versions", "--json")
    assert code == 0
    (version,) = json.loads(out)
    assert version["price_version"].startswith("litellm-") and version["models"] > 3000


def test_overrides_or_catalog_that_is_a_directory_is_one_line_exit_2(tmp_path: Path) -> None:
    """Before: ``--overrides <a directory>`` raised IsADirectoryError out of the command (a traceback)."""
    for flag in ("--overrides", "--catalog"):
        result = runner.invoke(build_app(), ["price", "gpt-4o", "--input", "10", flag, str(tmp_path)])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
        assert "Is a directory" in result.stderr and len(result.stderr.strip().splitlines()) == 1
