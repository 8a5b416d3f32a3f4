"""``costplane rerate``: price stored history again under another catalog or price version.

(No ``from __future__ import annotations`` here: Typer reads the annotations of the command at registration.)
"""

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from costplane.cli.ledger_options import Database
from costplane.cli.output import console, print_json

#: A re-rate of a long range can take minutes: the worker answers when it is done.
REMOTE_TIMEOUT_S = 3600.0


def register(app: typer.Typer) -> None:
    app.command(name="rerate")(rerate)


def _remote(api_url: str, query: str) -> Any:
    from costplane.streams.sink.rerate import RerateError

    url = f"{api_url.rstrip('/')}/api/report?{query}"
    try:
        with urllib.request.urlopen(url, timeout=REMOTE_TIMEOUT_S) as response:  # noqa: S310 - owner file/flag
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 400:
            raise RerateError(str(json.loads(exc.read() or b"{}").get("error", "bad rerate request"))) from None
        raise


def _run(request: Any, api_url: str | None, database: str | None) -> Any:
    """Locally (owning the database) or through the worker that owns the embedded directory."""
    from costplane.cli.report import api_to_ask, ledger_client
    from costplane.config import ClickHouseSettings, load_settings
    from costplane.streams.sink.rerate import run_rerate

    settings = load_settings(ClickHouseSettings, **({"database": database} if database else {}))
    api_url = api_to_ask(settings, api_url)
    if api_url is not None:
        return _remote(api_url, request.to_query_string())
    with ledger_client(settings) as client:
        return run_rerate(client, request, settings.database).to_json()


def rerate(
    catalog: Annotated[
        Path | None,
        typer.Option(
            "--catalog",
            help="Price with this catalog file (either format): each event at the version in force at its time.",
        ),
    ] = None,
    price_version: Annotated[
        str | None, typer.Option("--price-version", help="Price every event with this version of the catalog in force.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="From this day (ISO date or time, or ago: 7d, 2w); widened to whole UTC days. Default: 30 days ago.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Before this time, widened to the end of its UTC day. Default: through today."),
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's events.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show old vs new totals; write nothing.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table | json")] = "table",
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            envvar="COSTPLANE_WORKER_API_URL",
            help="Run it in this worker (default: the owner of the embedded chDB directory, if any).",
        ),
    ] = None,
    database: Database = None,
) -> None:
    """Recompute the cost (and per-event amounts) of stored events under another price version; rollups rebuilt."""
    from datetime import UTC, datetime

    from costplane.cli.report import ledger_failures
    from costplane.pricing.catalog import CatalogError, load_catalog
    from costplane.reports.definitions import present
    from costplane.reports.errors import ReportError
    from costplane.reports.options import DEFAULT_RANGE, parse_time
    from costplane.streams.sink.rerate import RerateRequest

    with ledger_failures("rerate", bad_input=(CatalogError,)):
        if fmt not in ("table", "json"):
            raise ReportError(f"--format must be table or json, not {fmt!r}")
        now = datetime.now(UTC)
        start = parse_time(since, now) if since else now - DEFAULT_RANGE
        end = parse_time(until, now) if until else None
        if catalog is not None:
            load_catalog(catalog)  # a file that does not parse is one line here, before any work
        request = RerateRequest.build(
            start,
            end,
            now=now,
            tenant=tenant,
            catalog=str(catalog.resolve()) if catalog is not None else None,
            price_version=price_version,
            dry_run=dry_run,
        )
        answer = _run(request, api_url, database)
    answer["rows"] = present(answer["rows"])
    if fmt == "json":
        print_json(answer)
        return
    _table(answer, request)


def _table(answer: dict[str, Any], request: Any) -> None:
    from rich.table import Table

    from costplane.reports.money import usd_display

    title = f"{'dry run: ' if request.dry_run else ''}re-rating {request.since:%Y-%m-%d} – {request.until:%Y-%m-%d}"
    table = Table(title=title, caption=", ".join(answer["price_versions"]))
    for column in ("tenant", "model", "events", "changed", "old", "new", "difference"):
        table.add_column(column, justify="left" if column in ("tenant", "model") else "right")
    for r in answer["rows"]:
        table.add_row(
            r["tenant"],
            r["model"],
            f"{r['events']:,}",
            f"{r['changed_events']:,}",
            usd_display(r["old_cost_nanos"]),
            usd_display(r["new_cost_nanos"]),
            usd_display(r["difference_nanos"]),
        )
    out = console()
    if answer["rows"]:
        out.print(table)
    if answer["written"]:
        out.print(
            f"re-rated {answer['events']:,} events ({answer['changed_events']:,} changed); rebuilt "
            f"{len(answer['partitions'])} partitions of the raw events and rollups"
        )
    else:
        out.print(f"nothing written: {answer['events']:,} events, {answer['changed_events']:,} would change")
