"""``costplane demo``: the main job on the real local stack, start to finish, for a newcomer."""

from __future__ import annotations

import typer

from costplane.cli.output import console


def register(app: typer.Typer) -> None:
    app.command(name="demo")(demo)


def demo() -> None:
    """Start the local stack and show it is healthy (the full pipeline demo builds on this)."""
    from costplane.devstack.prereqs import MissingPrerequisite
    from costplane.devstack.stack import DevStack

    err = console(stderr=True)
    stack = DevStack.from_settings()
    try:
        with err.status("starting the costplane dev stack…") as spinner:
            status = stack.up(progress=lambda msg: spinner.update(msg))
    except MissingPrerequisite as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(3) from None
    for name in ("kafka", "redis", "clickhouse"):
        console().print(f"{name}: {'healthy' if status[name]['healthy'] else 'NOT healthy'}")
