"""``costplane price``, ``costplane prices import`` and ``costplane tokens``: the price catalog from a shell."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from costplane.cli.output import console, print_json

prices_app = typer.Typer(help="Manage price catalogs (import LiteLLM's public price map).", no_args_is_help=True)

TIERS = ("standard", "batch", "priority", "flex")


def register(app: typer.Typer) -> None:
    app.command(name="price")(price)
    app.command(name="tokens")(tokens)
    app.add_typer(prices_app, name="prices")


def _catalog(catalog: Path | None, overrides: Path | None) -> Any:
    from costplane.config import PricingSettings, load_settings
    from costplane.pricing.catalog import CatalogError, default_catalog, load_catalog
    from costplane.pricing.overrides import OverridesError

    try:
        if catalog is None and overrides is None:
            return default_catalog()
        settings = load_settings(PricingSettings)
        return load_catalog(catalog or settings.catalog, overrides or settings.overrides)
    except (CatalogError, OverridesError) as exc:
        console(stderr=True).print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


def _per_million(usd: Decimal) -> str:
    from costplane.pricing.litellm_import import price_literal

    literal: str = price_literal(usd * 1_000_000)
    return "$" + literal


def price(
    model: Annotated[str, typer.Argument(help="Model name as the app calls it, e.g. gpt-4o or openai/gpt-4o.")],
    input_tokens: Annotated[int, typer.Option("--input", min=0, help="Uncached input tokens.")] = 0,
    cached_input: Annotated[int, typer.Option("--cached-input", min=0, help="Cache-read input tokens.")] = 0,
    cache_write: Annotated[int, typer.Option("--cache-write", min=0, help="Cache-write tokens (5-minute).")] = 0,
    cache_write_1h: Annotated[int, typer.Option("--cache-write-1h", min=0, help="Cache-write tokens (1-hour).")] = 0,
    output: Annotated[int, typer.Option("--output", min=0, help="Visible output tokens (without reasoning).")] = 0,
    reasoning: Annotated[int, typer.Option("--reasoning", min=0, help="Reasoning tokens.")] = 0,
    provider: Annotated[str, typer.Option("--provider", help="Provider, e.g. openai, anthropic, gemini.")] = "",
    tier: Annotated[str, typer.Option("--tier", help="standard | batch | priority | flex.")] = "standard",
    at: Annotated[str | None, typer.Option("--at", help="Price at this ISO-8601 instant (default: now).")] = None,
    catalog: Annotated[
        Path | None, typer.Option("--catalog", help="Catalog file: costplane format or a LiteLLM map as is.")
    ] = None,
    overrides: Annotated[Path | None, typer.Option("--overrides", help="Overrides file (YAML/JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Cost of one call: total, per-bucket breakdown and the price version used (buckets are disjoint)."""
    from costplane.pricing.catalog import CatalogError, parse_instant
    from costplane.pricing.cost import TokenUsage

    if tier not in TIERS:
        raise typer.BadParameter(f"must be one of {', '.join(TIERS)}", param_hint="--tier")
    try:
        occurred_at = parse_instant(at) if at else None
    except CatalogError as exc:
        raise typer.BadParameter(str(exc), param_hint="--at") from None
    cat = _catalog(catalog, overrides)
    usage = TokenUsage(input_tokens, cached_input, cache_write, output, reasoning, cache_write_1h)
    cost = cat.price(provider, model, usage, service_tier=tier, occurred_at_ms=occurred_at)
    if as_json:
        print_json(
            {
                "model": model,
                "price_version": cost.price_version,
                "cost_usd": str(cost.cost_usd),
                "cost_nanos": cost.cost_nanos,
                "breakdown": {k: str(v) for k, v in cost.breakdown.items()},
                "unpriced": cost.unpriced,
            }
        )
        return
    out = console()
    if cost.unpriced:
        out.print(f"[yellow]{model}: no price in catalog {cost.price_version} — unpriced (cost 0)[/]")
        return
    from rich.table import Table

    rates = cat.explain(provider, model, usage.prompt_tokens, tier, occurred_at) or {}
    counts = {
        "input": input_tokens,
        "cached_input": cached_input,
        "cache_write": cache_write,
        "cache_write_1h": cache_write_1h,
        "output": output,
        "reasoning": reasoning,
    }
    table = Table(title=f"{model} · {tier} · {cost.price_version}")
    for column in ("bucket", "tokens", "price / 1M", "price field", "cost USD"):
        table.add_column(column, justify="right" if column in ("tokens", "cost USD", "price / 1M") else "left")
    for bucket, amount in cost.breakdown.items():
        rate = rates.get(bucket)
        table.add_row(
            bucket,
            f"{counts[bucket]:,}",
            _per_million(rate.usd) if rate else "",
            rate.source if rate else "",
            str(amount),
        )
    out.print(table)
    out.print(f"total: ${cost.cost_usd} (exact) = {cost.cost_nanos:,} nano-USD (rounded half-even)")


@prices_app.command(name="import")
def import_prices(
    file: Annotated[Path, typer.Argument(help="LiteLLM price map (.json) or a litellm wheel (.whl).", exists=True)],
    out: Annotated[Path | None, typer.Option("--out", help="Write the catalog here (default: stdout).")] = None,
    effective_from: Annotated[
        str | None, typer.Option("--effective-from", help="ISO date/instant the prices apply from (default: today).")
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Provenance label (default: litellm-<version> from a wheel).")
    ] = None,
    append: Annotated[
        bool, typer.Option("--append", help="Add as a new version to the catalog at --out (keeps history).")
    ] = False,
) -> None:
    """Convert LiteLLM's price map into a costplane catalog (chat, completion, responses, embedding models)."""
    from costplane.pricing.catalog import CatalogError, parse_catalog, parse_instant
    from costplane.pricing.litellm_import import (
        CATALOG_FORMAT,
        build_version,
        catalog_document,
        dump_catalog,
        is_litellm_map,
        load_json_exact,
        read_litellm_source,
    )

    err = console(stderr=True)
    try:
        raw, label, digest = read_litellm_source(file)
    except (OSError, KeyError, ValueError) as exc:
        err.print(f"[red]{file}: cannot read a LiteLLM price map: {exc}[/]")
        raise typer.Exit(2) from None
    if not is_litellm_map(raw):
        err.print(f"[red]{file}: not a LiteLLM price map[/]")
        raise typer.Exit(2)
    try:
        millis = parse_instant(effective_from) if effective_from else None
    except CatalogError as exc:
        raise typer.BadParameter(str(exc), param_hint="--effective-from") from None
    moment = (
        datetime.fromtimestamp(millis / 1000, tz=UTC)
        if millis is not None
        else datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    )
    version, report = build_version(raw, source=source or label, effective_from=moment, source_sha256=digest)
    versions = [version]
    if append:
        if out is None or not out.exists():
            raise typer.BadParameter("--append needs an existing catalog at --out", param_hint="--append")
        existing = load_json_exact(out.read_bytes())
        if not isinstance(existing, dict) or existing.get("format") != CATALOG_FORMAT:
            err.print(f"[red]{out}: not a costplane catalog[/]")
            raise typer.Exit(2)
        kept = [v for v in existing["versions"] if v.get("price_version") != version["price_version"]]
        versions = [*kept, version]
    document = catalog_document(versions)
    text = dump_catalog(document)
    parse_catalog(load_json_exact(text))  # never write a catalog we could not load back
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
    err.print(
        f"{version['price_version']}: {report.kept} models kept, {report.skipped_mode} of other modes skipped, "
        f"{len(report.skipped_unpriced)} without per-token prices skipped"
        + (f", {len(report.bad_values)} invalid values ignored" if report.bad_values else "")
        + (f" → {out} ({len(versions)} version(s))" if out else "")
    )


def tokens(
    model: Annotated[str, typer.Option("--model", "-m", help="Model whose tokenizer to use.")],
    file: Annotated[str, typer.Argument(help="Text file, or a JSON list of chat messages; '-' reads stdin.")] = "-",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Count tokens offline (shipped tokenizer data): plain text, or chat messages with per-message overhead."""
    from costplane.pricing.tokens import count_messages, count_text

    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    kind = "text"
    messages: Any = None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            messages = json.loads(text)
        except ValueError:
            messages = None
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        result = count_messages(messages, model)
        kind = "messages"
    else:
        result = count_text(text, model)
    if as_json:
        print_json(
            {
                "model": model,
                "tokens": result.tokens,
                "estimated": result.estimated,
                "encoding": result.encoding,
                "input": kind,
            }
        )
        return
    note = " (estimate: not this model's own tokenizer)" if result.estimated else ""
    console().print(f"{result.tokens} tokens · {result.encoding} · {kind}{note}")


def _threshold(tokens: int) -> str:
    return f"{tokens // 1000}k" if tokens % 1000 == 0 else str(tokens)


@prices_app.command(name="show")
def show_prices(
    model: Annotated[str, typer.Argument(help="Model name as the app calls it.")],
    provider: Annotated[str, typer.Option("--provider", help="Provider, e.g. openai, anthropic, gemini.")] = "",
    at: Annotated[str | None, typer.Option("--at", help="Catalog version at this ISO-8601 instant.")] = None,
    catalog: Annotated[Path | None, typer.Option("--catalog", help="Catalog file (either format).")] = None,
    overrides: Annotated[Path | None, typer.Option("--overrides", help="Overrides file (YAML/JSON).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A model's catalog entry and the unit price every bucket resolves to, per service tier and size tier."""
    from costplane.pricing.catalog import CatalogError, parse_instant
    from costplane.pricing.litellm_import import price_literal

    try:
        occurred_at = parse_instant(at) if at else None
    except CatalogError as exc:
        raise typer.BadParameter(str(exc), param_hint="--at") from None
    cat = _catalog(catalog, overrides)
    version = cat.version_at(occurred_at)
    rates = cat.lookup(provider, model, occurred_at)
    if rates is None:
        if as_json:
            print_json({"model": model, "price_version": version.price_version, "unpriced": True})
        else:
            console().print(f"[yellow]{model}: not in catalog {version.price_version}[/]")
        raise typer.Exit(1)
    entry = version.models[rates.name]
    prompt_sizes = [0, *(n + 1 for n in rates.thresholds)]
    resolved: dict[str, dict[str, str]] = {}
    for tier in TIERS:
        for size in prompt_sizes:
            label = f"{tier} >{_threshold(size - 1)}" if size else tier
            explained = cat.explain(provider, model, size, tier, occurred_at) or {}
            resolved[label] = {b: price_literal(r.usd * 1_000_000) for b, r in explained.items()}
    if as_json:
        print_json(
            {
                "model": model,
                "name": rates.name,
                "provider": rates.provider,
                "mode": entry.get("mode"),
                "price_version": version.price_version,
                "thresholds": list(rates.thresholds),
                "off_peak": rates.off_peak is not None,
                "prices": {k: str(v) for k, v in entry.items() if isinstance(v, Decimal)},
                "per_million": resolved,
                "unpriced": False,
            }
        )
        return
    from rich.table import Table

    out = console()
    extra = " · has off-peak prices" if rates.off_peak is not None else ""
    out.print(f"{rates.name} ({rates.provider}, {entry.get('mode')}) in {version.price_version}{extra}")
    buckets = list(next(iter(resolved.values())))
    table = Table(title="USD per 1M tokens")
    table.add_column("tier / prompt size")
    for bucket in buckets:
        table.add_column(bucket, justify="right")
    for label, row in resolved.items():
        table.add_row(label, *(row[b] for b in buckets))
    out.print(table)


@prices_app.command(name="versions")
def list_versions(
    catalog: Annotated[Path | None, typer.Option("--catalog", help="Catalog file (either format).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The catalog's price versions: label, effective from, model count, source."""
    cat = _catalog(catalog, None)
    rows = [
        {
            "price_version": v.price_version,
            "effective_from": datetime.fromtimestamp(v.effective_from_ms / 1000, tz=UTC).isoformat(),
            "models": len(v.models),
            "source": dict(v.source),
        }
        for v in cat.versions
    ]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table()
    for column in ("price_version", "effective_from", "models", "source"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["price_version"], row["effective_from"], str(row["models"]), str(row["source"].get("name")))
    console().print(table)
