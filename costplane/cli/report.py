"""``costplane report NAME``: the attribution reports over what the sink wrote to ClickHouse.

Every report takes the same options (range, tenant, grouping, filters, top, format); ``costplane report --list``
names them with the question each answers. Embedded chDB can be opened by one process only: when a running sink
owns the directory (its owner file names a live pid), the report is fetched from that process's ``/api/report``,
which runs the very same :func:`costplane.streams.sink.query.run_report`.

(No ``from __future__ import annotations`` here: each report's options are built in a closure, and Typer reads
their annotations at registration.)
"""

import csv
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from costplane.cli.ledger_options import ApiUrl, Database, Since, Tenant, Until
from costplane.cli.output import console, print_json


class ReportGroup(TyperGroup):
    """Report names as subcommands; an unknown name is one line and exit 2, not a usage screen."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            console(stderr=True).print(
                f"[red]unknown report {name!r}: choose from {', '.join(self.list_commands(ctx))}[/]"
            )
            raise typer.Exit(2)
        return super().resolve_command(ctx, args)


report_app = typer.Typer(
    cls=ReportGroup,
    invoke_without_command=True,
    help="Where the money goes: attribution reports over ClickHouse (costplane report --list).",
)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")


@report_app.callback()
def _reports(
    ctx: typer.Context,
    list_: Annotated[bool, typer.Option("--list", help="Name every report and the question it answers.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --list: JSON instead of a table.")] = False,
) -> None:
    """Reports over the raw events and rollups the sink wrote; money in integer nano-USD and exact USD."""
    if ctx.invoked_subcommand is not None:
        return
    from costplane.reports.definitions import REPORTS

    if not list_:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    if as_json:
        print_json(
            [{"name": r.name, "question": r.question, "default_by": list(r.default_by)} for r in REPORTS.values()]
        )
        return
    from rich.table import Table

    table = Table(title="costplane reports")
    for column in ("report", "question", "default --by"):
        table.add_column(column)
    for r in REPORTS.values():
        table.add_row(r.name, r.question, ",".join(r.default_by))
    console().print(table)


def fetch_remote(api_url: str, options: Any, timeout_s: float = 60.0, fmt: str = "") -> Any:
    """The worker's answer to ``GET {api_url}/api/report?…`` (a report object; FOCUS rows with fmt=focus)."""
    query = options.to_query_string() + (f"&format={fmt}" if fmt else "")
    url = f"{api_url.rstrip('/')}/api/report?{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - URL from the owner file/flag
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 400:
            from costplane.reports.errors import ReportError

            detail = json.loads(exc.read() or b"{}").get("error", "bad report request")
            raise ReportError(str(detail)) from None
        raise


def api_to_ask(settings: Any, api_url: str | None) -> str | None:
    """The worker API to ask instead of opening ClickHouse here: the one given, else the live owner's of the
    embedded directory (None: no owner, or a server URL). An owner serving no API raises DirectoryOwned."""
    from costplane.streams.sink.errors import DirectoryOwned
    from costplane.streams.sink.ownership import current_owner

    if settings.url is not None or api_url is not None:
        return api_url
    owner = current_owner(settings.chdb_path)
    if owner is None:
        return None
    if owner.api_url is None:
        raise DirectoryOwned(str(settings.chdb_path), owner.pid, None)
    return owner.api_url


def collect(options: Any, api_url: str | None = None, database: str | None = None, fmt: str = "") -> Any:
    """The report from ClickHouse directly, or from the worker that owns the embedded directory.

    Returns a :class:`~costplane.streams.sink.query.ReportResult`, or FOCUS rows when ``fmt == "focus"``.
    """
    from costplane.config import ClickHouseSettings, load_settings
    from costplane.streams.sink.query import ReportResult, run_focus, run_report

    settings = load_settings(ClickHouseSettings, **({"database": database} if database else {}))
    api_url = api_to_ask(settings, api_url)
    if api_url is not None:
        answer = fetch_remote(api_url, options, fmt=fmt)
        return answer if fmt == "focus" else ReportResult.from_json(answer)

    with ledger_client(settings) as client:
        if fmt == "focus":
            return run_focus(client, options, settings.database, settings.raw_ttl_days)
        return run_report(client, options, settings.database, settings.raw_ttl_days)


@contextmanager
def ledger_client(settings: Any) -> Iterator[Any]:
    """A client of the ledger here: the server's, or the embedded directory's under its lock while it is used."""
    from costplane.streams.sink.client import open_client
    from costplane.streams.sink.ownership import DirectoryLock

    if settings.url is not None:
        yield open_client(settings, create_database=False)
        return
    with DirectoryLock.acquire(settings.chdb_path):
        yield open_client(settings, create_database=False)


@contextmanager
def ledger_failures(what: str, bad_input: tuple[type[BaseException], ...] = (), hint: str = "") -> Iterator[None]:
    """How every command that reads the ledger fails: bad input is one line and exit 2; an embedded directory owned
    by a process without an API, or ClickHouse or the worker out of reach, is one line and exit 1 (``hint`` is
    added when ClickHouse itself refused)."""
    from clickhouse_connect.driver.exceptions import Error as ClickHouseError

    from costplane.reports.errors import ReportError
    from costplane.streams.sink.errors import DirectoryOwned, SinkUnavailable

    err = console(stderr=True)
    refused: tuple[type[BaseException], ...] = (ReportError, *bad_input)
    try:
        yield
    except refused as exc:
        err.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    except DirectoryOwned as exc:
        err.print(f"[red]{exc}[/]: it serves no API; pass --api-url or set COSTPLANE_WORKER_API_URL.")
        raise typer.Exit(1) from None
    except (SinkUnavailable, urllib.error.URLError, OSError, ValueError, ClickHouseError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        extra = f"\n{hint}" if hint and isinstance(exc, ClickHouseError) else ""
        err.print(f"[red]{what} failed: {first}[/]{extra}")
        raise typer.Exit(1) from None


def _cell(key: str, value: Any) -> str:
    """A table cell: dollars for money, percent for ratios, the plain value otherwise."""
    from costplane.reports.money import percent, usd_display

    if value is None:
        return "—"
    if key.endswith("_nanos"):
        return usd_display(int(value))
    if isinstance(value, float):
        return percent(value) if key in _RATIOS else f"{value:,.2f}"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


_RATIOS = {"share", "share_of_tenant", "hit_rate", "retry_rate"}


def _print_table(result: Any) -> None:
    from rich.table import Table

    out = console()
    rows = result.rows
    columns = [c for c in (rows[0] if rows else {}) if not c.endswith("_usd")]
    table = Table(title=f"{result.report} by {', '.join(result.by) or 'everything'}", caption=result.source)
    for c in columns:
        table.add_column(
            c.removesuffix("_nanos") if c.endswith("_nanos") else c,
            justify="left" if c in result.by or isinstance(rows[0][c], str) else "right",
        )
    for row in rows:
        table.add_row(*(_cell(c, row[c]) for c in columns))
    if rows:
        out.print(table)
    out.print(result.reading)


def _print_csv(columns: list[str], rows: list[dict[str, Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                "" if row.get(c) is None else (json.dumps(row[c]) if isinstance(row[c], list) else row[c])
                for c in columns
            ]
        )


def _make_command(name: str, question: str) -> Any:
    def command(
        by: Annotated[
            list[str] | None,
            typer.Option(
                "--by",
                help="Group by these dimensions (comma-separated or repeated): tenant, team, feature, user, "
                "model, provider, env, plan, status, service_tier, operation, session, request, day, hour, month, "
                "attr.KEY.",
            ),
        ] = None,
        where: Annotated[
            list[str] | None,
            typer.Option(
                "--where", help="Only rows where DIM=VALUE (repeatable; an empty VALUE means the dimension is missing)."
            ),
        ] = None,
        since: Since = None,
        until: Until = None,
        tenant: Tenant = None,
        top: Annotated[int | None, typer.Option("--top", help="Only the first N rows.")] = None,
        fmt: Annotated[
            str,
            typer.Option(
                "--format", help="table | json | csv" + (" | focus (FinOps FOCUS CSV)" if name == "chargeback" else "")
            ),
        ] = "table",
        allocate: Annotated[
            str,
            typer.Option(
                "--allocate",
                hidden=name != "chargeback",
                help="none: untagged spend is its own row; proportional: spread over the tagged groups.",
            ),
        ] = "none",
        production: Annotated[
            str | None,
            typer.Option(
                "--production",
                hidden=name not in ("environments", "leaks"),
                help="Environments that count as production (comma-separated). "
                "Default: COSTPLANE_REPORTS_PRODUCTION_ENVS (prod,production).",
            ),
        ] = None,
        price_version: Annotated[
            str | None,
            typer.Option(
                "--price-version",
                help="Show costs re-priced per call at this catalog version (from the raw events) "
                "instead of the stored rating.",
            ),
        ] = None,
        api_url: ApiUrl = None,
        database: Database = None,
    ) -> None:
        from costplane.reports.errors import ReportError
        from costplane.reports.options import ReportOptions

        err = console(stderr=True)
        formats = ("table", "json", "csv", "focus") if name == "chargeback" else ("table", "json", "csv")
        with ledger_failures("report", hint="(has `costplane db migrate` run for this database?)"):
            if fmt not in formats:
                raise ReportError(f"--format must be one of {', '.join(formats)}, not {fmt!r}")
            if allocate != "none" and name != "chargeback":
                raise ReportError("--allocate applies to the chargeback report only")
            if production is not None and name not in ("environments", "leaks"):
                raise ReportError("--production applies to the environments and leaks reports only")
            if fmt == "focus" and allocate != "none":
                raise ReportError(
                    "--format focus writes spend as charged; --allocate applies to the table, JSON "
                    "and CSV of the chargeback report"
                )
            if production is None:
                from costplane.config import ReportSettings, load_settings

                production = load_settings(ReportSettings).production_envs
            options = ReportOptions.parse(
                name,
                since=since,
                until=until,
                tenant=tenant,
                by=by or [],
                where=where or [],
                top=top,
                allocate=allocate,
                production_envs=production,
                price_version=price_version,
            )
            result = collect(options, api_url, database, fmt="focus" if fmt == "focus" else "")
        if fmt == "focus":
            from costplane.reports.focus import FOCUS_COLUMNS

            _print_csv(list(FOCUS_COLUMNS), result)
            return
        for note in result.notes:
            err.print(f"[yellow]note: {note}[/]")
        if fmt == "json":
            print_json(result.rows)
        elif fmt == "csv":
            from costplane.reports.definitions import REPORTS, public_columns

            _print_csv(public_columns(REPORTS[name], result.by), result.rows)
        else:
            _print_table(result)

    command.__doc__ = question
    return command


@report_app.command("html")
def html_report(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write (one self-contained file).")],
    since: Since = None,
    until: Until = None,
    tenant: Tenant = None,
    api_url: ApiUrl = None,
    database: Database = None,
) -> None:
    """Every report as one offline HTML page: each chart beside its numbers, budgets and their state, alerts."""
    from datetime import UTC, datetime

    from costplane.report_html import build_sections, render, subtitle_for
    from costplane.reports.options import ReportOptions

    err = console(stderr=True)
    with ledger_failures("report"):
        base = ReportOptions.parse("spend", since=since, until=until, tenant=tenant)
        with _PageRunner(api_url, database) as run:
            sections = build_sections(run, base, budgets=_live_budgets(tenant), alerts=_alerts(base))
    page = render(sections, "costplane spend report", subtitle_for(base, datetime.now(tz=UTC)))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        err.print(f"[red]cannot write {out}: {exc.strerror}[/]")
        raise typer.Exit(2) from None
    console().print(f"wrote {out.resolve()} ({len(sections)} sections): open it in any browser, no network needed")


class _PageRunner:
    """Runs the page's reports: through the directory owner's API, or on one ClickHouse client held for them all
    (the page runs a dozen reports; opening embedded ClickHouse once is what makes it quick)."""

    def __init__(self, api_url: str | None, database: str | None) -> None:
        from costplane.config import ClickHouseSettings, load_settings

        self.settings = load_settings(ClickHouseSettings, **({"database": database} if database else {}))
        self.api_url = api_to_ask(self.settings, api_url)
        self._held = ExitStack()

    def __enter__(self) -> Any:
        from costplane.streams.sink.query import ReportResult, run_report

        if self.api_url is not None:
            url = self.api_url
            return lambda options: ReportResult.from_json(fetch_remote(url, options))
        client, settings = self._held.enter_context(ledger_client(self.settings)), self.settings
        return lambda options: run_report(client, options, settings.database, settings.raw_ttl_days)

    def __exit__(self, *exc: object) -> None:
        self._held.close()


def _alerts(base: Any) -> Any:
    """The range's alerts from the alerts topic; None (no section) when Kafka cannot be read."""
    from costplane.alerts_read import alerts_in_range
    from costplane.config import KafkaSettings, load_settings

    return alerts_in_range(load_settings(KafkaSettings), base.since, base.until, base.tenant)


def _live_budgets(tenant: str | None) -> Any:
    """Budget status rows from Redis for the page; None (no section) when Redis cannot be read."""
    import time

    from costplane.budget_status_redis import UnknownScope, read_status
    from costplane.config import RedisSettings, load_settings
    from costplane.enforcers.connect import open_client
    from costplane.enforcers.keys import KeyLayout
    from costplane.enforcers.store import REDIS_ERRORS

    settings = load_settings(RedisSettings)
    try:
        client = open_client(settings, timeout_s=2)  # a cluster client connects as it is built
    except REDIS_ERRORS:
        return None
    try:
        rows = read_status(client, KeyLayout(settings.key_prefix), int(time.time() * 1000), tenant=tenant)
        return [r.to_json() for r in rows]
    except REDIS_ERRORS + (OSError, UnknownScope):
        return None
    finally:
        client.close()


def _register_reports() -> None:
    from costplane.reports.definitions import REPORTS

    for report in REPORTS.values():
        report_app.command(report.name, help=report.question)(_make_command(report.name, report.question))


_register_reports()
