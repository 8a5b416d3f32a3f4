"""``costplane report spend``: spend grouped by any dimensions, from the raw events.

Embedded chDB can be opened by one process only. When a running sink owns the directory (its owner file names
a live pid), the report is fetched from that process's ``/api/report`` endpoint instead, which runs the very
same :func:`costplane.streams.sink.query.run_report`.
"""

from __future__ import annotations

import csv
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from costplane.cli.output import console, print_json

report_app = typer.Typer(help="Reports over what the sink wrote to ClickHouse.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")


def fetch_remote(api_url: str, spec: Any, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """The report from a worker's ``GET {api_url}/api/report?…`` (a JSON array, like ``--format json``)."""
    url = f"{api_url.rstrip('/')}/api/report?{spec.to_query_string()}"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - URL from the owner file/flag
        data = json.loads(response.read())
    if not isinstance(data, list):
        raise ValueError(f"{url} did not return a JSON array")
    return data


def _local(settings: Any, spec: Any) -> list[dict[str, Any]]:
    """Open ClickHouse here (taking the embedded directory's lock for the duration) and run the report."""
    from costplane.streams.sink.client import open_client
    from costplane.streams.sink.ownership import DirectoryLock
    from costplane.streams.sink.query import run_report

    rows: list[dict[str, Any]]
    if settings.url is not None:
        rows = run_report(open_client(settings, create_database=False), spec, settings.database)
        return rows
    with DirectoryLock.acquire(settings.chdb_path):
        rows = run_report(open_client(settings, create_database=False), spec, settings.database)
    return rows


def collect(spec: Any, api_url: str | None = None, database: str | None = None) -> list[dict[str, Any]]:
    """Rows of the report: from ClickHouse directly, or from the worker that owns the embedded directory."""
    from costplane.config import ClickHouseSettings, load_settings
    from costplane.streams.sink.errors import DirectoryOwned
    from costplane.streams.sink.ownership import current_owner

    settings = load_settings(ClickHouseSettings, **({"database": database} if database else {}))
    if settings.url is None and api_url is None:
        owner = current_owner(settings.chdb_path)
        if owner is not None:
            api_url = owner.api_url
            if api_url is None:
                raise DirectoryOwned(str(settings.chdb_path), owner.pid, None)
    if api_url is not None:
        return fetch_remote(api_url, spec)
    return _local(settings, spec)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


@report_app.command("spend")
def spend(
    by: Annotated[str, typer.Option("--by", help="Dimensions, comma-separated: tenant, team, feature, user_id, "
                                    "model, provider, env, status, service_tier, plan, turn, minute, hour, day, "
                                    "month.")],
    since: Annotated[str | None, typer.Option("--since", help="From this time (ISO 8601, UTC if naive).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Before this time (exclusive).")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | json | csv")] = "table",
    api_url: Annotated[str | None, typer.Option(
        "--api-url", envvar="COSTPLANE_WORKER_API_URL",
        help="Ask this worker's /api/report instead of opening ClickHouse (default: the directory owner's).")] = None,
    database: Annotated[str | None, typer.Option("--database", help="Database (default: from settings).")] = None,
) -> None:
    """Spend and tokens grouped by dimensions; cost as integer nano-USD and exact USD (never rounded floats)."""
    from clickhouse_connect.driver.exceptions import Error as ClickHouseError

    from costplane.streams.sink.errors import DirectoryOwned, SinkUnavailable
    from costplane.streams.sink.query import MEASURES, ReportError, ReportSpec

    err = console(stderr=True)
    if fmt not in ("table", "json", "csv"):
        err.print(f"[red]--format must be table, json or csv, not {fmt!r}[/]")
        raise typer.Exit(2)
    try:
        spec = ReportSpec.parse(by, since, until, tenant)
        rows = collect(spec, api_url, database)
    except ReportError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    except DirectoryOwned as exc:
        err.print(f"[red]{exc}[/]: it serves no API; pass --api-url or set COSTPLANE_WORKER_API_URL.")
        raise typer.Exit(1) from None
    except (SinkUnavailable, urllib.error.URLError, OSError, ValueError) as exc:
        err.print(f"[red]report failed: {exc}[/]")
        raise typer.Exit(1) from None
    except ClickHouseError as exc:
        err.print(f"[red]report failed: {exc}[/]\n(has `costplane db migrate` run for this database?)")
        raise typer.Exit(1) from None
    columns = [*spec.by, *MEASURES, "cost_usd"]
    if fmt == "json":
        print_json(rows)
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    else:
        from rich.table import Table

        table = Table(title="spend by " + ", ".join(spec.by))
        for c in columns:
            table.add_column(c, justify="left" if c in spec.by else "right")
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        console().print(table)


@report_app.command("html")
def html_report(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write (one self-contained file).")],
    since: Annotated[str | None, typer.Option("--since", help="From this time (ISO 8601, UTC if naive).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Before this time (exclusive).")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    api_url: Annotated[str | None, typer.Option(
        "--api-url", envvar="COSTPLANE_WORKER_API_URL",
        help="Ask this worker's /api/report instead of opening ClickHouse (default: the directory owner's).")] = None,
    database: Annotated[str | None, typer.Option("--database", help="Database (default: from settings).")] = None,
) -> None:
    """Write every report as one offline HTML page: each chart beside its numbers, budgets and their state."""
    from datetime import UTC, datetime

    from clickhouse_connect.driver.exceptions import Error as ClickHouseError

    from costplane.report_html import Window, build_sections, render, subtitle_for
    from costplane.streams.sink.errors import DirectoryOwned, SinkUnavailable
    from costplane.streams.sink.query import ReportError, parse_time

    err = console(stderr=True)
    try:
        window = Window(parse_time(since) if since else None, parse_time(until) if until else None, tenant or None)
        with _runner(api_url, database) as run:
            sections = build_sections(run, window, budgets=_live_budgets(tenant))
    except ReportError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    except (DirectoryOwned, SinkUnavailable, urllib.error.URLError, OSError, ValueError, ClickHouseError) as exc:
        err.print(f"[red]report failed: {exc}[/]")
        raise typer.Exit(1) from None
    page = render(sections, "costplane spend report", subtitle_for(window, datetime.now(tz=UTC)))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        err.print(f"[red]cannot write {out}: {exc.strerror}[/]")
        raise typer.Exit(2) from None
    console().print(f"wrote {out.resolve()} ({len(sections)} sections) — open it in any browser, no network needed")


class _runner:  # noqa: N801 - used as a context manager, named like a function
    """A report runner for the page: the directory owner's API, or one ClickHouse client held for every section."""

    def __init__(self, api_url: str | None, database: str | None) -> None:
        from costplane.config import ClickHouseSettings, load_settings
        from costplane.streams.sink.errors import DirectoryOwned
        from costplane.streams.sink.ownership import current_owner

        self.settings = load_settings(ClickHouseSettings, **({"database": database} if database else {}))
        self.api_url = api_url
        if self.settings.url is None and api_url is None:
            owner = current_owner(self.settings.chdb_path)
            if owner is not None:
                if owner.api_url is None:
                    raise DirectoryOwned(str(self.settings.chdb_path), owner.pid, None)
                self.api_url = owner.api_url
        self._lock: Any = None
        self._client: Any = None

    def __enter__(self) -> Any:
        from costplane.streams.sink.query import run_report

        if self.api_url is not None:
            url = self.api_url
            return lambda spec: fetch_remote(url, spec)
        from costplane.streams.sink.client import open_client
        from costplane.streams.sink.ownership import DirectoryLock

        if self.settings.url is None:
            self._lock = DirectoryLock.acquire(self.settings.chdb_path)
        self._client = open_client(self.settings, create_database=False)
        client, db = self._client, self.settings.database
        return lambda spec: run_report(client, spec, db)

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()


def _live_budgets(tenant: str | None) -> list[dict[str, Any]] | None:
    """Budget status rows from Redis for the page; None (no section) when Redis cannot be read."""
    import time

    import redis
    from redis.exceptions import RedisError

    from costplane.budget_status_redis import UnknownScope, read_status
    from costplane.config import RedisSettings, load_settings
    from costplane.enforcers.keys import KeyLayout

    settings = load_settings(RedisSettings)
    client = redis.Redis.from_url(settings.url.get_secret_value(), socket_timeout=2, socket_connect_timeout=2)
    try:
        rows = read_status(client, KeyLayout(settings.key_prefix), int(time.time() * 1000), tenant=tenant)
        return [r.to_json() for r in rows]
    except (RedisError, OSError, UnknownScope):
        return None
    finally:
        client.close()
