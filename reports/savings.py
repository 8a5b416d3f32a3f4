"""The savings reports: what to change and what it would have saved on the calls already made.

``models`` (a cheaper model for the same calls), ``batch`` (background work on the batch tier), ``max-tokens``
(uncapped outputs), ``embeddings`` (content embedded again), ``billing`` (the provider's bill against the catalog)
and ``leaks`` (the waterfall from total to essential spend). Counterfactual prices are per call, compiled from the
catalog by :mod:`costplane.reports.repricing_sql` with the catalog version that priced each call.
"""

from __future__ import annotations

from typing import Any

from costplane.reports.base import Context, Prepared, Report, Row, int_fields, row_label, rows_of, totals
from costplane.reports.money import fraction, percent, usd_display
from costplane.reports.options import ReportOptions
from costplane.reports.repricing_sql import compile_routes, half_even
from costplane.reports.routing import RoutingMap

#: Outputs this short are classification or extraction shapes a smaller model usually handles.
SHORT_OUTPUT_TOKENS = 64


def _models_in_range(ctx: Context) -> list[tuple[str, str]]:
    """The (provider, model) pairs with priced calls in the range (what the compiled prices must cover)."""
    where = ["occurred_at >= {s:DateTime64(3, 'UTC')}", "NOT unpriced"]
    params: dict[str, Any] = {"s": ctx.options.since}
    if ctx.options.until is not None:
        where.append("occurred_at < {u:DateTime64(3, 'UTC')}")
        params["u"] = ctx.options.until
    if ctx.options.tenant is not None:
        where.append("tenant = {t:String}")
        params["t"] = ctx.options.tenant
    rows = ctx.fetch(
        f"SELECT DISTINCT provider, model FROM {ctx.database}.usage_events WHERE {' AND '.join(where)}", params
    )
    return [(str(p), str(m)) for p, m in rows]


def cheaper_routes(ctx: Context) -> dict[tuple[str, str], tuple[str, str]]:
    """Each model in range with a cheaper suggestion → (its provider, the suggested model)."""
    routing = ctx.assumptions.routing or RoutingMap.shipped(ctx.catalog)
    routes = {}
    for provider, model in _models_in_range(ctx):
        target = routing.cheaper(model)
        if target is not None:
            routes[(provider, model)] = (provider, target)
    return routes


def _background_sql(ctx: Context, prepared: Prepared) -> str:
    prepared.params["bg_features"] = list(ctx.assumptions.background_features)
    prepared.params["bg_envs"] = list(ctx.assumptions.batch_envs)
    return (
        "if(ifNull(service_tier, 'standard') NOT IN ('standard', 'priority'), '', "
        "multiIf(ifNull(feature, '') IN {bg_features:Array(String)}, 'configured feature', "
        "session_id IS NULL AND ifNull(operation, '') = 'embedding', 'embedding without a session', "
        "session_id IS NULL AND ifNull(env, '') IN {bg_envs:Array(String)}, 'batch environment', ''))"
    )


def _prepare_models(ctx: Context) -> Prepared:
    routes = cheaper_routes(ctx)
    compiled = compile_routes(ctx.catalog, routes)
    params = dict(compiled.params)
    cases = []
    for n, ((provider, model), (_, target)) in enumerate(sorted(routes.items())):
        params.update({f"sp{n}": provider, f"sm{n}": model, f"st{n}": target})
        cases.append(f"provider = {{sp{n}:String}} AND model = {{sm{n}:String}}, {{st{n}:String}}")
    suggested = f"multiIf({', '.join(cases)}, NULL)" if cases else "CAST(NULL AS Nullable(String))"
    return Prepared(
        {
            "units": compiled.units,
            "divisor": compiled.divisor,
            "suggested": suggested,
            "half_even": half_even("_units", "_div"),
        },
        params,
    )


def _prepare_batch(ctx: Context) -> Prepared:
    identity = {pair: pair for pair in _models_in_range(ctx)}
    compiled = compile_routes(ctx.catalog, identity, tier="batch")
    prepared = Prepared(
        {"units": compiled.units, "divisor": compiled.divisor, "half_even": half_even("_units", "_div")},
        compiled.params,
    )
    prepared.sql["background"] = _background_sql(ctx, prepared)
    return prepared


def _prepare_max_tokens(ctx: Context) -> Prepared:
    """Price only the output tokens above the group's p99 (``_excess``), at each call's own prices."""
    identity = {pair: pair for pair in _models_in_range(ctx)}
    only_excess = {
        "input_tokens": "0",
        "cached_input_tokens": "0",
        "cache_write_tokens": "0",
        "output_tokens": "_excess",
        "reasoning_tokens": "0",
    }
    compiled = compile_routes(ctx.catalog, identity, buckets=only_excess)
    return Prepared(
        {"units": compiled.units, "divisor": compiled.divisor, "half_even": half_even("_units", "_div")},
        compiled.params,
    )


def _prepare_leaks(ctx: Context) -> Prepared:
    model = compile_routes(ctx.catalog, cheaper_routes(ctx), param_prefix="lm")
    batch = compile_routes(ctx.catalog, {pair: pair for pair in _models_in_range(ctx)}, tier="batch", param_prefix="lb")
    prepared = Prepared(
        {
            "model_units": model.units,
            "model_divisor": model.divisor,
            "model_half_even": half_even("_model_units", "_model_div"),
            "batch_units": batch.units,
            "batch_divisor": batch.divisor,
            "batch_half_even": half_even("_batch_units", "_batch_div"),
        },
        {**model.params, **batch.params, "production": list(ctx.options.production_envs)},
    )
    prepared.sql["background"] = _background_sql(ctx, prepared)
    return prepared


# -- models ----------------------------------------------------------------------------------------------------


def _repriced(r: Row, column: str) -> int | None:
    """A counterfactual sum, or None when some call of the group could not be re-priced (off-peak windows)."""
    return int(r[column]) if int(r["_not_repriced"]) == 0 and r[column] is not None else None


def _finish_models(rows: list[Row], options: ReportOptions) -> list[Row]:
    def fields(r: Row) -> Row:
        calls, cost = int(r["calls"]), int(r["cost_nanos"])
        on_cheaper = _repriced(r, "_cheaper_sum")
        return {
            "calls": calls,
            **int_fields(r, ("p50_output_tokens", "p90_output_tokens")),
            "short_output_share": fraction(int(r["_short"]), calls),
            "cost_nanos": cost,
            "cheaper_model": r.get("_suggested") if on_cheaper is not None else None,
            "cost_on_cheaper_nanos": on_cheaper,
            "saving_nanos": cost - on_cheaper if on_cheaper is not None else None,
        }

    return rows_of(rows, options, fields)


def _read_models(rows: list[Row], options: ReportOptions) -> str:
    candidates = [r for r in rows if r["saving_nanos"]]
    if not candidates:
        return "no model in this range has a cheaper suggestion in the routing map"
    top = max(candidates, key=lambda r: r["saving_nanos"])
    return (
        f"{row_label(top, options)} on {top['cheaper_model']} would have cost {usd_display(top['saving_nanos'])} "
        f"less; {percent(top['short_output_share'])} of its outputs are short (≤ {SHORT_OUTPUT_TOKENS} tokens) — "
        "check quality before routing"
    )


# -- batch -----------------------------------------------------------------------------------------------------


def _finish_batch(rows: list[Row], options: ReportOptions) -> list[Row]:
    def fields(r: Row) -> Row:
        cost, batch = int(r["cost_nanos"]), _repriced(r, "_batch_sum")
        return {
            "calls": int(r["calls"]),
            "cost_nanos": cost,
            "batch_cost_nanos": batch,
            "saving_nanos": cost - batch if batch is not None else None,
            "reasons": list(r["reasons"]),
        }

    return rows_of(rows, options, fields, {"_total_cost": "_total_cost_nanos", "_total_saving": "_total_saving_nanos"})


def _read_batch(rows: list[Row], options: ReportOptions) -> str:
    saving, cost = totals(rows, "_total_saving", "_total_cost")
    return (
        f"background work cost {usd_display(cost)} at the standard or priority tier; the batch tier would have "
        f"saved {usd_display(saving)} ({percent(fraction(saving, cost))})"
    )


# -- max tokens ------------------------------------------------------------------------------------------------


def _finish_max_tokens(rows: list[Row], options: ReportOptions) -> list[Row]:
    def fields(r: Row) -> Row:
        p50_max = int(r["_p50_max"]) if int(r["_with_max"]) else None
        p99 = int(r["p99_output_tokens"])
        return {
            **int_fields(r, ("calls", "calls_without_max_tokens")),
            "p50_max_tokens": p50_max,
            **int_fields(r, ("p50_output_tokens", "p99_output_tokens")),
            "headroom": fraction(p50_max, p99) if p50_max is not None else None,
            "excess_output_cost_nanos": int(r["_excess_cost_nanos"]),
        }

    return rows_of(rows, options, fields, {"_total_calls": "_total_calls", "_total_without": "_total_without"})


def _read_max_tokens(rows: list[Row], options: ReportOptions) -> str:
    calls, uncapped = totals(rows, "_total_calls", "_total_without")
    return (
        f"{uncapped:,} of {calls:,} successful calls ({percent(fraction(uncapped, calls))}) set no max_tokens: "
        "one runaway generation is billed in full"
    )


# -- embeddings ------------------------------------------------------------------------------------------------


def _finish_embeddings(rows: list[Row], options: ReportOptions) -> list[Row]:
    return rows_of(
        rows,
        options,
        lambda r: int_fields(r, ("embedding_calls", "distinct_content", "repeat_calls", "repeat_cost_nanos")),
        {"_total_repeats": "_total_repeats", "_total_repeat_cost": "_total_repeat_cost"},
    )


def _read_embeddings(rows: list[Row], options: ReportOptions) -> str:
    repeats, cost = totals(rows, "_total_repeats", "_total_repeat_cost")
    return f"{repeats:,} embedding calls repeated content already embedded, costing {usd_display(cost)}"


# -- billing ---------------------------------------------------------------------------------------------------


def _finish_billing(rows: list[Row], options: ReportOptions) -> list[Row]:
    def fields(r: Row) -> Row:
        billed, computed = int(r["billed_nanos"]), int(r["computed_nanos"])
        return {
            "events_with_billed": int(r["events_with_billed"]),
            "billed_nanos": billed,
            "computed_nanos": computed,
            "difference_nanos": billed - computed,
            "difference": fraction(billed - computed, computed),
        }

    return rows_of(rows, options, fields)


def _read_billing(rows: list[Row], options: ReportOptions) -> str:
    worst = max(rows, key=lambda r: abs(r["difference"] or 0))
    return (
        f"largest gap: {row_label(worst, options)} billed {usd_display(worst['billed_nanos'])} against "
        f"{usd_display(worst['computed_nanos'])} computed ({percent(worst['difference'])}) — a stale or wrong "
        "catalog entry shows here first"
    )


# -- leaks -----------------------------------------------------------------------------------------------------

#: In the order the waterfall deducts them (each takes at most what the earlier ones left), then the rest.
LEAK_COLUMNS = (
    "total_cost_nanos",
    "nonprod_nanos",
    "retry_waste_nanos",
    "repeat_embedding_nanos",
    "history_nanos",
    "uncached_prefix_nanos",
    "model_saving_nanos",
    "batch_saving_nanos",
    "essential_nanos",
)


def _finish_leaks(rows: list[Row], options: ReportOptions) -> list[Row]:
    """One row per group, then the ``overall`` row: the whole range's totals (taken before ``--top``)."""

    def waterfall(amounts: Row, overall: bool) -> Row:
        multiplier = fraction(amounts["total_cost_nanos"], amounts["essential_nanos"])
        return {**amounts, "leak_multiplier": multiplier, "overall": overall}

    out = rows_of(rows, options, lambda r: waterfall(int_fields(r, LEAK_COLUMNS), False))
    if rows:
        whole = {column: int(rows[0][f"_all_{column}"]) for column in LEAK_COLUMNS}
        out.append({**{g.given: None for g in options.by}, **waterfall(whole, True)})
    return out


def _read_leaks(rows: list[Row], options: ReportOptions) -> str:
    whole = rows[-1]
    leaks = {c.removesuffix("_nanos"): whole[c] for c in LEAK_COLUMNS[1:-1]}
    biggest = max(leaks, key=lambda k: leaks[k])
    multiplier = whole["leak_multiplier"]
    shown = "—" if multiplier is None else f"{multiplier:.2f}×"
    return (
        f"spent {usd_display(whole['total_cost_nanos'])} for {usd_display(whole['essential_nanos'])} of "
        f"essential work ({shown}); the largest leak: {biggest.replace('_', ' ')} "
        f"{usd_display(leaks[biggest])}"
    )


SAVINGS: tuple[Report, ...] = (
    Report(
        "models",
        "Which features use a bigger model than their calls need, and what would a cheaper one cost?",
        "models",
        ("feature", "model"),
        (
            "calls",
            "p50_output_tokens",
            "p90_output_tokens",
            "short_output_share",
            "cost_nanos",
            "cheaper_model",
            "cost_on_cheaper_nanos",
            "saving_nanos",
        ),
        "cost_nanos DESC",
        _finish_models,
        _read_models,
        raw_only=True,
        always_by=("model",),
        prepare=_prepare_models,
    ),
    Report(
        "batch",
        "Which background work runs on the standard tier, and what would the batch tier save?",
        "batch",
        ("feature", "model"),
        ("calls", "cost_nanos", "batch_cost_nanos", "saving_nanos", "reasons"),
        "cost_nanos DESC",
        _finish_batch,
        _read_batch,
        raw_only=True,
        prepare=_prepare_batch,
    ),
    Report(
        "max-tokens",
        "Which calls leave max_tokens unset, and how does the cap compare with the output?",
        "max_tokens",
        ("feature", "model"),
        (
            "calls",
            "calls_without_max_tokens",
            "p50_max_tokens",
            "p50_output_tokens",
            "p99_output_tokens",
            "headroom",
            "excess_output_cost_nanos",
        ),
        "_cost DESC",
        _finish_max_tokens,
        _read_max_tokens,
        raw_only=True,
        prepare=_prepare_max_tokens,
    ),
    Report(
        "embeddings",
        "How much is spent embedding content that was embedded before?",
        "embeddings",
        ("feature",),
        ("embedding_calls", "distinct_content", "repeat_calls", "repeat_cost_nanos"),
        "repeat_cost_nanos DESC",
        _finish_embeddings,
        _read_embeddings,
        raw_only=True,
    ),
    Report(
        "billing",
        "Does the provider's billed cost match what costplane computed for the same calls?",
        "billing",
        ("provider", "model"),
        ("events_with_billed", "billed_nanos", "computed_nanos", "difference_nanos", "difference"),
        "abs(billed_nanos - computed_nanos) DESC",
        _finish_billing,
        _read_billing,
        raw_only=True,
    ),
    Report(
        "leaks",
        "How much of the spend was essential, and where did the rest leak?",
        "leaks",
        ("tenant",),
        (*LEAK_COLUMNS, "leak_multiplier", "overall"),
        "total_cost_nanos DESC",
        _finish_leaks,
        _read_leaks,
        raw_only=True,
        prepare=_prepare_leaks,
    ),
)
