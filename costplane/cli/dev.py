"""``costplane dev up | down | status``: the local stack of real servers, no Docker."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from costplane.cli.output import console, print_json

dev_app = typer.Typer(
    help="Run the local stack: Kafka (KRaft), redis-server and embedded ClickHouse.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(dev_app, name="dev")


def _health_table(status: dict[str, Any]) -> Table:
    table = Table(title="costplane dev stack")
    table.add_column("service")
    table.add_column("endpoint")
    table.add_column("healthy")
    rows = (("kafka", "bootstrap"), ("redis", "url"), ("clickhouse", "dsn"))
    for name, key in rows:
        ok = bool(status[name]["healthy"])
        table.add_row(name, str(status[name][key]), "[green]yes[/]" if ok else "[red]no[/]")
    return table


def _public(status: dict[str, Any]) -> dict[str, Any]:
    """The documented JSON shape: endpoint and health per service, nothing else."""
    return {
        "kafka": {"bootstrap": status["kafka"]["bootstrap"], "healthy": status["kafka"]["healthy"]},
        "redis": {"url": status["redis"]["url"], "healthy": status["redis"]["healthy"]},
        "clickhouse": {"dsn": status["clickhouse"]["dsn"], "healthy": status["clickhouse"]["healthy"]},
    }


def _all_healthy(status: dict[str, Any]) -> bool:
    return all(status[name]["healthy"] for name in ("kafka", "redis", "clickhouse"))


@dev_app.command()
def up(as_json: bool = typer.Option(False, "--json", help="Print endpoints and health as JSON.")) -> None:
    """Start the stack (idempotent) and wait until every service really answers."""
    from costplane.devstack.kafka import KafkaSetupError
    from costplane.devstack.prereqs import MissingPrerequisite
    from costplane.devstack.stack import DevStack, ServiceDidNotStart

    err = console(stderr=True)
    stack = DevStack.from_settings()
    try:
        with err.status("starting the costplane dev stack…") as spinner:
            status = stack.up(progress=lambda msg: spinner.update(msg))
    except MissingPrerequisite as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(3) from None
    except (KafkaSetupError, ServiceDidNotStart) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    if as_json:
        print_json(_public(status))
    else:
        console().print(_health_table(status))
        console().print(f"state: {status['state_dir']}  ·  stop with `costplane dev down`")
    if not _all_healthy(status):
        raise typer.Exit(1)


@dev_app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print endpoints and health as JSON.")) -> None:
    """Report each service's endpoint and health (exit status 1 when any is unhealthy)."""
    from costplane.devstack.stack import DevStack

    result = DevStack.from_settings().status()
    if as_json:
        print_json(_public(result))
    else:
        console().print(_health_table(result))
    if not _all_healthy(result):
        raise typer.Exit(1)


@dev_app.command()
def down() -> None:
    """Stop what `up` started (data stays, so `up` brings it all back)."""
    from costplane.devstack.stack import DevStack

    stopped = DevStack.from_settings().down()
    for name, was_running in stopped.items():
        console().print(f"{name}: {'stopped' if was_running else 'was not running'}")
