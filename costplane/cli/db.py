"""``costplane db migrate|status``: the ClickHouse schema from the numbered files in ``sql/migrations``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from costplane.cli.output import console, print_json

db_app = typer.Typer(help="ClickHouse schema: apply and inspect migrations.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


@contextlib.contextmanager
def _client(database: str | None) -> Iterator[tuple[Any, Any]]:
    """A client for the configured ClickHouse; embedded directories are locked for the command's duration."""
    from costplane.config import ClickHouseSettings, load_settings
    from costplane.streams.sink.client import open_client
    from costplane.streams.sink.errors import DirectoryOwned, SinkUnavailable
    from costplane.streams.sink.ownership import DirectoryLock

    overrides = {"database": database} if database else {}
    settings = load_settings(ClickHouseSettings, **overrides)
    lock = None
    try:
        if settings.url is None:
            lock = DirectoryLock.acquire(settings.chdb_path)
        yield open_client(settings), settings
    except DirectoryOwned as exc:
        console(stderr=True).print(
            f"[red]{exc}[/]: the sink that owns it runs migrations when it starts; stop it to run this command."
        )
        raise typer.Exit(1) from None
    except SinkUnavailable as exc:
        console(stderr=True).print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    finally:
        if lock is not None:
            lock.release()


DatabaseOpt = Annotated[
    str | None, typer.Option("--database", help="Database (default: COSTPLANE_CLICKHOUSE_DATABASE).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@db_app.command("migrate")
def migrate(database: DatabaseOpt = None, json_out: JsonOpt = False) -> None:
    """Apply pending migrations in order (idempotent) and set the raw-events TTL from the settings."""
    from costplane.streams.sink import migrations
    from costplane.streams.sink.errors import MigrationError

    with _client(database) as (client, settings):
        try:
            applied = migrations.migrate(client, settings.database, settings.raw_ttl_days)
        except MigrationError as exc:
            console(stderr=True).print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    names = [f"{m.version:04d}_{m.name}" for m in applied]
    if json_out:
        print_json({"database": settings.database, "applied": names, "raw_ttl_days": settings.raw_ttl_days})
        return
    out = console()
    out.print(f"{settings.database}: " + (f"applied {', '.join(names)}" if names else "up to date"))


@db_app.command("status")
def status(database: DatabaseOpt = None, json_out: JsonOpt = False) -> None:
    """Each migration file: pending, applied (when) or changed since it was applied. Exit 1 on a changed file."""
    from rich.table import Table

    from costplane.streams.sink import migrations

    with _client(database) as (client, settings):
        states = migrations.status(client, settings.database)
    if json_out:
        print_json(
            [
                {
                    "version": s.version,
                    "name": s.name,
                    "status": s.status,
                    "checksum": s.checksum,
                    "applied_at": s.applied_at.isoformat() if s.applied_at else None,
                }
                for s in states
            ]
        )
    else:
        table = Table(title=f"migrations of {settings.database}")
        for col in ("version", "name", "status", "applied at"):
            table.add_column(col)
        for s in states:
            colour = {"applied": "green", "pending": "yellow", "changed": "red"}[s.status]
            table.add_row(f"{s.version:04d}", s.name, f"[{colour}]{s.status}[/]", str(s.applied_at or ""))
        console().print(table)
    if any(s.status == "changed" for s in states):
        raise typer.Exit(1)
