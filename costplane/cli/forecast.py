"""``costplane forecast``: where this month will end, and ``forecast scenario``: what planned traffic will cost.

(No ``from __future__ import annotations`` here: Typer reads the annotations of the callback at registration.)
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from costplane.cli.ledger_options import ApiUrl, Database
from costplane.cli.output import console, print_json

forecast_app = typer.Typer(
    invoke_without_command=True,
    help="Month-end projections per tenant and budget; `forecast scenario` prices planned traffic.",
)


def register(app: typer.Typer) -> None:
    app.add_typer(forecast_app, name="forecast")


def _fail(message: str) -> None:
    console(stderr=True).print(f"[red]{message}[/]", soft_wrap=True)
    raise typer.Exit(2)


@forecast_app.callback()
def forecast(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant (and budgets in its scope).")] = None,
    budget: Annotated[str | None, typer.Option("--budget", help="Only this monthly budget's members.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | json")] = "table",
    at: Annotated[
        str | None,
        typer.Option(
            "--at", help="Forecast as of this time (ISO 8601, UTC if naive); spend after it is left out. Default: now."
        ),
    ] = None,
    budgets_file: Annotated[
        Path | None,
        typer.Option(
            "--budgets", help="Read budgets from this YAML file (as `budget apply` takes) instead of the budgets topic."
        ),
    ] = None,
    api_url: ApiUrl = None,
    database: Database = None,
) -> None:
    """Month-end projection per tenant and per monthly budget member: month-to-date, run rate, range, crossing day."""
    if ctx.invoked_subcommand is not None:
        return
    from datetime import UTC, datetime

    from costplane.cli.report import collect, ledger_failures
    from costplane.reports.definitions import present
    from costplane.reports.errors import ReportError
    from costplane.reports.forecast import forecast_rows, requests_for
    from costplane.reports.options import parse_time

    with ledger_failures("forecast"):
        if fmt not in ("table", "json"):
            raise ReportError(f"--format must be table or json, not {fmt!r}")
        clock = datetime.now(UTC)
        now = parse_time(at, clock) if at else clock
        budgets = _budgets(budgets_file)
        requests = requests_for(budgets, now, tenant, budget, until=now if at else None)
        answers = [(r, collect(r.options, api_url, database).rows) for r in requests]
    rows = present(forecast_rows(answers, now))
    if fmt == "json":
        print_json(rows)
        return
    _forecast_table(rows, now)


def _budgets(path: Path | None) -> list[Any]:
    """The budgets: from a YAML file, else the budgets topic (a bad file is one line, exit 2)."""
    from costplane.budgets.model import BudgetError, budgets_from_yaml
    from costplane.reports.errors import ReportError

    if path is None:
        from confluent_kafka import KafkaException

        from costplane.cli.budget import read_budgets

        try:
            return list(read_budgets().values())
        except KafkaException as exc:  # the tenants' projections need no budgets: say so and go on
            console(stderr=True).print(f"[yellow]note: budgets topic unreadable ({exc}); tenants only[/]")
            return []
    try:
        return budgets_from_yaml(path.read_text(encoding="utf-8"))
    except (OSError, BudgetError) as exc:
        raise ReportError(f"{path}: {exc}") from None


def _forecast_table(rows: list[dict[str, Any]], now: Any) -> None:
    from rich.table import Table

    from costplane.reports.forecast import reading
    from costplane.reports.money import percent, usd_display

    def money(value: Any) -> str:
        return "—" if value is None else usd_display(int(value))

    table = Table(title=f"month-end forecast as of {now:%Y-%m-%d %H:%MZ}")
    for column in (
        "tenant",
        "budget",
        "member",
        "basis",
        "to date",
        "projected",
        "low",
        "high",
        "limit",
        "share",
        "crosses",
    ):
        table.add_column(column, justify="left" if column in ("tenant", "budget", "member", "basis") else "right")
    for r in rows:
        table.add_row(
            r["tenant"],
            r["budget_id"] or "",
            r["member"] or "",
            r["basis"],
            money(r["month_to_date_nanos"]),
            money(r["projected_nanos"]),
            money(r["low_nanos"]),
            money(r["high_nanos"]),
            money(r["limit_nanos"]),
            percent(r["projected_share"]),
            r["projected_cross_date"] or "",
        )
    out = console()
    if rows:
        out.print(table)
    out.print(reading(rows) if rows else "no spend in the look-back")


@forecast_app.command(name="scenario")
def scenario(
    sessions: Annotated[int | None, typer.Option("--sessions", help="Sessions per month.")] = None,
    messages: Annotated[int | None, typer.Option("--messages", help="Messages (calls) per session.")] = None,
    requests: Annotated[int | None, typer.Option("--requests", help="Calls per month (instead of sessions).")] = None,
    input_tokens: Annotated[int, typer.Option("--input", help="New input tokens per call.")] = 0,
    output_tokens: Annotated[int, typer.Option("--output", help="Output tokens per call.")] = 0,
    model: Annotated[str | None, typer.Option("--model", help="Model as the app calls it, e.g. gpt-4o.")] = None,
    provider: Annotated[str, typer.Option("--provider", help="Provider, e.g. openai, anthropic, gemini.")] = "",
    system_prompt: Annotated[int, typer.Option("--system-prompt", help="System-prompt tokens in every call.")] = 0,
    cached_share: Annotated[
        str | None, typer.Option("--cached-share", help="Share of each prompt read from the prompt cache, 0..1.")
    ] = None,
    tier: Annotated[str, typer.Option("--tier", help="standard | batch | flex | priority.")] = "standard",
    retry_rate: Annotated[
        str | None, typer.Option("--retry-rate", help="Extra attempts per call (e.g. 0.05), billed as input.")
    ] = None,
    growth: Annotated[
        int, typer.Option("--growth", help="Prompt tokens each turn of a session adds (history re-sent).")
    ] = 0,
    compare_models: Annotated[
        str | None, typer.Option("--compare", help="Also price on these models (comma-separated), one row each.")
    ] = None,
    catalog: Annotated[Path | None, typer.Option("--catalog", help="Catalog file (default: the one in force).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | json")] = "table",
) -> None:
    """A monthly cost from first principles: calls × per-call price, each call shape priced like `costplane price`."""
    from costplane.pricing.catalog import CatalogError, default_catalog, load_catalog
    from costplane.reports.definitions import present
    from costplane.reports.scenario import ScenarioError, compare, parse_scenario

    try:
        if fmt not in ("table", "json"):
            raise ScenarioError(f"--format must be table or json, not {fmt!r}")
        plan = parse_scenario(
            sessions=sessions,
            messages=messages,
            requests=requests,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            system_prompt_tokens=system_prompt,
            cached_share=cached_share,
            tier=tier,
            retry_rate=retry_rate,
            growth=growth,
        )
        cat = load_catalog(catalog) if catalog is not None else default_catalog()
        models = ([model] if model else []) + (compare_models.split(",") if compare_models else [])
        results = compare(cat, plan, models, provider)
    except (ScenarioError, CatalogError) as exc:
        _fail(str(exc))
        return
    rows = present([r.row() for r in results])
    if fmt == "json":
        print_json(rows)
        return
    _scenario_table(rows, plan.calls)


def _scenario_table(rows: list[dict[str, Any]], calls: int) -> None:
    from rich.table import Table

    from costplane.reports.money import usd_display

    table = Table(title=f"{calls:,} calls a month · {rows[0]['tier']}", caption=rows[0]["price_version"])
    for column in ("model", "per call", "monthly", "retries", "input", "cached input", "output"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        per_call = "—" if r["per_call_nanos"] is None else usd_display(r["per_call_nanos"])
        table.add_row(
            r["model"],
            per_call,
            usd_display(r["monthly_cost_nanos"]),
            f"{r['retry_attempts']:,}",
            f"{r['input_tokens']:,}",
            f"{r['cached_input_tokens']:,}",
            f"{r['output_tokens']:,}",
        )
    console().print(table)
