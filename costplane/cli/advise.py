"""``costplane advise``: what to change, ranked by the money it would save a month, with the evidence."""

from __future__ import annotations

from typing import Annotated

import typer

from costplane.cli.ledger_options import ApiUrl, Tenant, Until
from costplane.cli.output import console, print_json


def register(app: typer.Typer) -> None:
    app.command("advise")(advise)


def advise(
    since: Annotated[
        str | None, typer.Option("--since", help="From this time (ISO, epoch ms or ago: 7d). Default: 30 days ago.")
    ] = None,
    until: Until = None,
    tenant: Tenant = None,
    fmt: Annotated[str, typer.Option("--format", help="table | json")] = "table",
    api_url: ApiUrl = None,
) -> None:
    """Ranked opportunities: each change, its scope, the evidence and the report that shows it, and its saving
    extrapolated to 30 days (nothing under COSTPLANE_REPORTS_ADVISE_FLOOR_USD a month)."""
    from datetime import UTC, datetime

    from costplane.cli.report import collect, ledger_failures
    from costplane.config import ReportSettings, load_settings
    from costplane.reports.advice import gather
    from costplane.reports.options import ReportOptions

    err = console(stderr=True)
    if fmt not in ("table", "json"):
        err.print(f"[red]--format must be table or json, not {fmt!r}[/]")
        raise typer.Exit(2)
    now = datetime.now(UTC)
    settings = load_settings(ReportSettings)
    floor = int(settings.advise_floor_usd * 10**9)
    with ledger_failures("advise"):
        base = ReportOptions.parse(
            "spend", since=since, until=until, tenant=tenant, now=now, production_envs=settings.production_envs
        )
        opportunities, notes = gather(lambda options: collect(options, api_url), base, floor)
    for note in notes:
        err.print(f"[yellow]note: {note}[/]")
    if fmt == "json":
        print_json([o.to_json() for o in opportunities])
        return
    out = console()
    if not opportunities:
        out.print("nothing to change that would save more than the floor a month in this range")
        return
    from rich.table import Table

    from costplane.reports.money import usd_display

    table = Table(title="what to change, by monthly saving")
    for column in ("saving / month", "kind", "scope", "confidence", "what to do"):
        table.add_column(column, justify="right" if column.startswith("saving") else "left")
    for o in opportunities:
        scope = ", ".join(f"{k}={v}" for k, v in o.scope.items() if v is not None)
        action = (
            o.action
            + (f"\n[yellow]{o.caveat}[/]" if o.caveat else "")
            + f"\n[dim]{o.reason} — {o.evidence['report']}[/]"
        )
        table.add_row(usd_display(o.monthly_saving_nanos), o.kind, scope, o.confidence, action)
    out.print(table)
    total = sum(o.monthly_saving_nanos for o in opportunities)
    out.print(
        f"{len(opportunities)} change(s) worth {usd_display(total)} a month together "
        "(before overlaps: the leaks report splits overlapping savings)"
    )
