"""The attribution reports: where the money went (spend, requests, users, retries, caching, context, system
prompt, environments, unpriced models, chargeback)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from costplane.reports.allocation import proportional
from costplane.reports.base import (
    Report,
    Row,
    first_total,
    group_values,
    int_fields,
    json_value,
    row_label,
    rows_of,
    totals,
)
from costplane.reports.money import fraction, mean_nanos, percent, usd_display
from costplane.reports.options import ReportOptions

# -- spend -----------------------------------------------------------------------------------------------------

SPEND_COLUMNS = (
    "requests",
    "attempts",
    "retries",
    "failed_attempts",
    "failed_cost_nanos",
    "unpriced_attempts",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_nanos",
)


def _finish_spend(rows: list[Row], options: ReportOptions) -> list[Row]:
    return rows_of(
        rows,
        options,
        lambda r: int_fields(r, SPEND_COLUMNS),
        {"_total_cost_nanos": "_total_cost_nanos", "_total_failed": "_total_failed_cost_nanos"},
    )


def _read_spend(rows: list[Row], options: ReportOptions) -> str:
    total, failed = totals(rows, "_total_cost_nanos", "_total_failed")
    top = max(rows, key=lambda r: r["cost_nanos"])
    return (
        f"spent {usd_display(total)}; failed attempts cost {usd_display(failed)} "
        f"({percent(fraction(failed, total))}) — the largest group, {row_label(top, options)}, "
        f"{usd_display(top['cost_nanos'])} ({percent(fraction(top['cost_nanos'], total))})"
    )


# -- requests --------------------------------------------------------------------------------------------------

REQUEST_COLUMNS = ("requests", "avg_cost_nanos", "p50_cost_nanos", "p95_cost_nanos", "max_cost_nanos", "avg_attempts")
REQUEST_LIST_COLUMNS = (
    "tenant",
    "feature",
    "attempts",
    "cost_nanos",
    "failed_cost_nanos",
    "first_at",
    "last_at",
    "models",
)


def per_request(options: ReportOptions) -> bool:
    """``requests --by request``: one row per request rather than statistics per group."""
    return len(options.by) == 1 and options.by[0].dimension.name == "request"


def _finish_requests(rows: list[Row], options: ReportOptions) -> list[Row]:
    if per_request(options):
        return [
            {
                options.by[0].given: r["_request"],
                "tenant": r["_tenant"],
                "feature": r["_feature"],
                "attempts": int(r["attempts"]),
                "cost_nanos": int(r["_cost"]),
                "failed_cost_nanos": int(r["_failed_cost"]),
                "first_at": json_value(r["first_at"]),
                "last_at": json_value(r["last_at"]),
                "models": list(r["models"]),
            }
            for r in rows
        ]

    def fields(r: Row) -> Row:
        requests = int(r["requests"])
        return {
            "requests": requests,
            "avg_cost_nanos": mean_nanos(int(r["_cost_sum"]), requests),
            **int_fields(r, ("p50_cost_nanos", "p95_cost_nanos", "max_cost_nanos")),
            "avg_attempts": fraction(int(r["_attempts"]), requests),
        }

    return rows_of(rows, options, fields, {"_total_cost_nanos": "_total_cost_nanos"})


def _read_requests(rows: list[Row], options: ReportOptions) -> str:
    if per_request(options):
        top = rows[0]
        return (
            f"the dearest request, {top[options.by[0].given]} ({top['tenant']}), cost "
            f"{usd_display(top['cost_nanos'])} over {top['attempts']} attempt(s)"
        )
    top = max(rows, key=lambda r: r["avg_cost_nanos"] or 0)
    return (
        f"{row_label(top, options)} costs the most per request: {usd_display(top['avg_cost_nanos'] or 0)} on "
        f"average, p95 {usd_display(top['p95_cost_nanos'])}, {top['avg_attempts']:.2f} attempts per request"
    )


# -- users -----------------------------------------------------------------------------------------------------


def _finish_users(rows: list[Row], options: ReportOptions) -> list[Row]:
    def fields(r: Row) -> Row:
        users, cost = int(r["users"]), int(r["cost_nanos"])
        return {
            "users": users,
            "requests": int(r["requests"]),
            "cost_nanos": cost,
            "avg_cost_per_user_nanos": mean_nanos(cost, users),
            "share_of_tenant": fraction(cost, int(r["_tenant_cost_nanos"])),
        }

    return rows_of(rows, options, fields, lead=lambda r: {"tenant": r["_tenant"]})


def _read_users(rows: list[Row], options: ReportOptions) -> str:
    top = max(rows, key=lambda r: r["cost_nanos"])
    return (
        f"the largest group, {row_label(top, options, ('tenant',))}: {top['users']} user(s) at "
        f"{usd_display(top['avg_cost_per_user_nanos'] or 0)} each, {percent(top['share_of_tenant'])} of "
        "the tenant's spend"
    )


def users_options(options: ReportOptions) -> ReportOptions:
    """The users report always groups by tenant (shares are of a tenant's spend); ``tenant`` is not repeated."""
    return options.with_by(tuple(g.given for g in options.by if g.dimension.name != "tenant"))


# -- retries ---------------------------------------------------------------------------------------------------


def _finish_retries(rows: list[Row], options: ReportOptions) -> list[Row]:
    def fields(r: Row) -> Row:
        requests, retried = int(r["requests"]), int(r["retried_requests"])
        return {
            "requests": requests,
            "retried_requests": retried,
            "retry_rate": fraction(retried, requests),
            **int_fields(r, ("failed_attempts", "wasted_tokens", "wasted_cost_nanos")),
        }

    carry = {"_total_cost_nanos": "_total_cost_nanos", "_total_wasted": "_total_wasted_cost_nanos"}
    return rows_of(rows, options, fields, carry)


def _read_retries(rows: list[Row], options: ReportOptions) -> str:
    total, wasted = totals(rows, "_total_cost_nanos", "_total_wasted")
    top = max(rows, key=lambda r: r["wasted_cost_nanos"])
    return (
        f"failed attempts cost {usd_display(wasted)} ({percent(fraction(wasted, total))} of spend) — "
        f"{percent(fraction(top['wasted_cost_nanos'], wasted))} of it in {row_label(top, options)}"
    )


# -- caching ---------------------------------------------------------------------------------------------------


CACHING_AMOUNTS = (
    "saved_nanos",
    "uncached_prefix_tokens",
    "uncached_prefix_cost_nanos",
    "would_save_nanos",
    "result_cache_hits",
    "result_cache_avoided_nanos",
)


def _finish_caching(rows: list[Row], options: ReportOptions) -> list[Row]:
    def fields(r: Row) -> Row:
        prompt, cached = int(r["prompt_tokens"]), int(r["_cached"])
        return {
            "prompt_tokens": prompt,
            "cached_input_tokens": cached,
            "hit_rate": fraction(cached, prompt),
            **int_fields(r, CACHING_AMOUNTS),
        }

    carry = {"_total_would_save": "_total_would_save_nanos", "_total_saved": "_total_saved_nanos"}
    return rows_of(rows, options, fields, carry)


def _read_caching(rows: list[Row], options: ReportOptions) -> str:
    saved, would = totals(rows, "_total_saved", "_total_would_save")
    top = max(rows, key=lambda r: r["would_save_nanos"])
    where = f" — most in {row_label(top, options)}" if top["would_save_nanos"] else ""
    return (
        f"cache reads saved {usd_display(saved)}; caching long system prompts would save "
        f"{usd_display(would)} more{where}"
    )


# -- context ---------------------------------------------------------------------------------------------------


def _finish_context(rows: list[Row], options: ReportOptions) -> list[Row]:
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in rows:
        requests = int(r["requests"])
        shown = {
            **group_values(r, options),
            "turn": r["_turn"],
            "requests": requests,
            "avg_input_tokens": fraction(int(r["_prompt_sum"]), requests),
            "p90_input_tokens": int(r["p90_input_tokens"]),
            "avg_output_tokens": fraction(int(r["_output_sum"]), requests),
            "cost_nanos": int(r["cost_nanos"]),
            "history_cost_nanos": int(r["history_cost_nanos"]),
            "_order": int(r["_turn_order"]),
        }
        groups[tuple(shown[g.given] for g in options.by)].append(shown)
    history = sum(m["history_cost_nanos"] for members in groups.values() for m in members)
    total = sum(m["cost_nanos"] for members in groups.values() for m in members)
    # --top keeps the groups that re-sent the most history, each with all its turns.
    ranked = sorted(groups.values(), key=lambda ms: -sum(m["history_cost_nanos"] for m in ms))
    kept = ranked if options.top is None else ranked[: options.top]
    kept_keys = {id(ms) for ms in kept}
    out: list[Row] = []
    for members in groups.values():
        if id(members) not in kept_keys:
            continue
        members.sort(key=lambda m: m["_order"])
        first = next((m for m in members if m["turn"] == "1"), None)
        deep = [m for m in members if m["requests"] >= 10]
        growth = None
        if first is not None and first["avg_input_tokens"] and deep:
            growth = deep[-1]["avg_input_tokens"] / first["avg_input_tokens"]
        out.extend({**m, "growth": growth, "_history_all": history, "_cost_all": total} for m in members)
    return out


def _read_context(rows: list[Row], options: ReportOptions) -> str:
    history, total = first_total(rows, "_history_all"), first_total(rows, "_cost_all")
    grown = [r for r in rows if r["growth"] is not None]
    line = f"re-sent history cost {usd_display(history)} ({percent(fraction(history, total))} of session spend)"
    if grown:
        top = max(grown, key=lambda r: r["growth"])
        line += f" — {row_label(top, options)} prompts grow ×{top['growth']:.1f} from turn 1"
    return line


# -- system prompt ---------------------------------------------------------------------------------------------


def _finish_system_prompt(rows: list[Row], options: ReportOptions) -> list[Row]:
    def fields(r: Row) -> Row:
        system, prompt = int(r["system_prompt_tokens"]), int(r["prompt_tokens"])
        return {
            "system_prompt_tokens": system,
            "prompt_tokens": prompt,
            "share": fraction(system, prompt),
            "system_prompt_cost_nanos": int(r["system_prompt_cost_nanos"]),
        }

    carry = {"_total_system": "_total_system_prompt_cost_nanos", "_total_cost_nanos": "_total_cost_nanos"}
    return rows_of(rows, options, fields, carry)


def _read_system_prompt(rows: list[Row], options: ReportOptions) -> str:
    system, total = totals(rows, "_total_system", "_total_cost_nanos")
    top = max(rows, key=lambda r: r["system_prompt_cost_nanos"])
    return (
        f"system prompts cost {usd_display(system)} ({percent(fraction(system, total))} of spend) — most in "
        f"{row_label(top, options)}"
    )


# -- environments ----------------------------------------------------------------------------------------------


def _finish_environments(rows: list[Row], options: ReportOptions) -> list[Row]:
    env_at = next((i for i, g in enumerate(options.by) if g.dimension.name == "env"), None)

    def fields(r: Row) -> Row:
        env = None if env_at is None else json_value(r[f"d{env_at}"])
        return {
            "attempts": int(r["attempts"]),
            "cost_nanos": int(r["cost_nanos"]),
            "share": fraction(int(r["cost_nanos"]), int(r["_total_cost_nanos"])),
            "nonprod": env is not None and env not in options.production_envs,
            "_nonprod_envs": sorted(r["_all_nonprod_envs"]),
        }

    return rows_of(
        rows, options, fields, {"_total_cost_nanos": "_total_cost_nanos", "_total_nonprod": "_total_nonprod_nanos"}
    )


def _read_environments(rows: list[Row], options: ReportOptions) -> str:
    total, nonprod = totals(rows, "_total_cost_nanos", "_total_nonprod")
    envs = rows[0]["_nonprod_envs"]
    named = f" ({', '.join(envs)})" if envs else ""
    return (
        f"non-production spend{named}: {usd_display(nonprod)}, {percent(fraction(nonprod, total))} of all spend "
        f"(production: {', '.join(options.production_envs)}; untagged counts as production)"
    )


# -- unpriced --------------------------------------------------------------------------------------------------

UNPRICED_COLUMNS = (
    "attempts",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "tokens",
)


def _finish_unpriced(rows: list[Row], options: ReportOptions) -> list[Row]:
    def fields(r: Row) -> Row:
        return {
            **int_fields(r, UNPRICED_COLUMNS),
            "first_seen": json_value(r["first_seen"]),
            "last_seen": json_value(r["last_seen"]),
        }

    return rows_of(rows, options, fields, {"_total_attempts": "_total_attempts", "_groups": "_groups"})


def _read_unpriced(rows: list[Row], options: ReportOptions) -> str:
    attempts, groups = totals(rows, "_total_attempts", "_groups")
    return (
        f"{attempts} attempt(s) in {groups} group(s) have no price, so no report counts their cost — add "
        "the models to the catalog (`costplane prices import`)"
    )


# -- chargeback ------------------------------------------------------------------------------------------------


def _finish_chargeback(rows: list[Row], options: ReportOptions) -> list[Row]:
    shown = [{**group_values(r, options), "cost_nanos": int(r["cost_nanos"])} for r in rows]
    grand = sum(r["cost_nanos"] for r in shown)
    tagged_flags = [all(r[g.given] is not None for g in options.by) for r in shown]
    tagged = [r for r, is_tagged in zip(shown, tagged_flags, strict=True) if is_tagged]
    unallocated = sum(r["cost_nanos"] for r, is_tagged in zip(shown, tagged_flags, strict=True) if not is_tagged)
    out: list[Row] = []
    if options.allocate == "proportional" and tagged:
        parts = proportional(unallocated, [r["cost_nanos"] for r in tagged])
        for r, part in zip(tagged, parts, strict=True):
            total = r["cost_nanos"] + part
            out.append(
                {
                    **r,
                    "allocated_nanos": part,
                    "total_nanos": total,
                    "share": fraction(total, grand),
                    "unallocated": False,
                }
            )
    else:
        for r, is_tagged in zip(shown, tagged_flags, strict=True):
            out.append(
                {
                    **r,
                    "allocated_nanos": 0,
                    "total_nanos": r["cost_nanos"],
                    "share": fraction(r["cost_nanos"], grand),
                    "unallocated": not is_tagged,
                }
            )
    out.sort(key=lambda r: (r["unallocated"], -r["total_nanos"]))
    if options.top is not None:
        out = out[: options.top]
    for r in out:
        r["_grand"], r["_unallocated"] = grand, unallocated
    return out


def _read_chargeback(rows: list[Row], options: ReportOptions) -> str:
    grand, unallocated = rows[0]["_grand"], rows[0]["_unallocated"]
    how = (
        "spread over the tagged groups in proportion to their spend"
        if options.allocate == "proportional"
        else "shown as unallocated"
    )
    return (
        f"{usd_display(grand)} charged back; untagged spend {usd_display(unallocated)} "
        f"({percent(fraction(unallocated, grand))}) {how}"
    )


# -- the reports ----------------------------------------------------------------------------------------------

ATTRIBUTION: tuple[Report, ...] = (
    Report(
        "spend",
        "What was spent, on how many requests and attempts, and how much on failures?",
        "spend",
        ("tenant",),
        SPEND_COLUMNS,
        "cost_nanos DESC",
        _finish_spend,
        _read_spend,
    ),
    Report(
        "requests",
        "What does one request cost with all its attempts?",
        "requests",
        ("feature",),
        REQUEST_COLUMNS,
        "_cost_sum DESC",
        _finish_requests,
        _read_requests,
        raw_only=True,
    ),
    Report(
        "users",
        "What does a user cost, per plan: is the free tier viable, and who are the top users?",
        "users",
        ("plan",),
        ("users", "requests", "cost_nanos", "avg_cost_per_user_nanos", "share_of_tenant"),
        "cost_nanos DESC",
        _finish_users,
        _read_users,
        families=("users", "spend"),
        needs=frozenset({"user_id"}),
    ),
    Report(
        "retries",
        "How many requests needed retries, and what did the failed attempts waste?",
        "retries",
        ("feature", "model"),
        ("requests", "retried_requests", "retry_rate", "failed_attempts", "wasted_tokens", "wasted_cost_nanos"),
        "wasted_cost_nanos DESC",
        _finish_retries,
        _read_retries,
    ),
    Report(
        "caching",
        "How much did prompt caching save, and what would caching long system prompts save?",
        "caching",
        ("feature", "model"),
        (
            "prompt_tokens",
            "cached_input_tokens",
            "hit_rate",
            "saved_nanos",
            "uncached_prefix_tokens",
            "uncached_prefix_cost_nanos",
            "would_save_nanos",
            "result_cache_hits",
            "result_cache_avoided_nanos",
        ),
        "would_save_nanos DESC",
        _finish_caching,
        _read_caching,
    ),
    Report(
        "context",
        "How fast do prompts grow over a conversation, and what does re-sent history cost?",
        "context",
        ("feature",),
        (
            "turn",
            "requests",
            "avg_input_tokens",
            "p90_input_tokens",
            "avg_output_tokens",
            "cost_nanos",
            "history_cost_nanos",
            "growth",
        ),
        "",
        _finish_context,
        _read_context,
        raw_only=True,
    ),
    Report(
        "system-prompt",
        "How much of every prompt is the system prompt, and what does it cost?",
        "system_prompt",
        ("feature",),
        ("system_prompt_tokens", "prompt_tokens", "share", "system_prompt_cost_nanos"),
        "system_prompt_cost_nanos DESC",
        _finish_system_prompt,
        _read_system_prompt,
    ),
    Report(
        "environments",
        "How much is spent outside production?",
        "environments",
        ("env",),
        ("attempts", "cost_nanos", "share", "nonprod"),
        "cost_nanos DESC",
        _finish_environments,
        _read_environments,
        always_by=("env",),
    ),
    Report(
        "unpriced",
        "Which models have no price, so their spend is invisible to every other report?",
        "unpriced",
        ("provider", "model"),
        (*UNPRICED_COLUMNS, "first_seen", "last_seen"),
        "attempts DESC",
        _finish_unpriced,
        _read_unpriced,
        families=("spend",),
        needs=frozenset({"unpriced"}),
    ),
    Report(
        "chargeback",
        "What does each team (or any grouping) owe for the period, untagged spend included?",
        "chargeback",
        ("team",),
        ("cost_nanos", "allocated_nanos", "total_nanos", "share", "unallocated"),
        "cost_nanos DESC",
        _finish_chargeback,
        _read_chargeback,
    ),
)
