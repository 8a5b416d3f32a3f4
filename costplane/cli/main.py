"""The ``costplane`` command: one Typer app, each command group registered from its own module.

Command modules import heavy dependencies (faust, clickhouse-connect, confluent-kafka) inside the commands, so
``costplane --help`` is fast and the SDK-only install can run every command that needs no worker extra.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys

import typer

from costplane.config import ConfigError
from costplane.logging import configure_logging
from costplane.redact import RedactingStream, Redactor, settings_secrets

app = typer.Typer(
    name="costplane",
    help="Event-streaming cost control plane for LLM API spend.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Each module exposes ``register(app)``; listed here so the command tree is readable in one place.
COMMAND_MODULES = (
    "costplane.cli.dev",
    "costplane.cli.demo",
    "costplane.cli.config_cmd",
    "costplane.cli.replay",
    "costplane.cli.import_cmd",
    "costplane.cli.ingest",
    "costplane.cli.pricing_cmds",
    "costplane.cli.db",
    "costplane.cli.report",
    "costplane.cli.advise",
    "costplane.cli.forecast",
    "costplane.cli.rerate",
    "costplane.cli.worker",
    "costplane.cli.budget",
    "costplane.cli.decisions",
    "costplane.cli.alerts",
    "costplane.cli.detectors",
)


@functools.cache
def build_app() -> typer.Typer:
    """Register every command module on the app (once per process)."""
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def run() -> None:
    """Console-script entry point: configuration errors print one readable block, exit status 2.

    Logs go to stderr (JSON, or console rendering on a TTY) so stdout stays clean for ``--json`` output. Both
    streams and every log record are redacted (``costplane.redact``): no secret reaches the output.
    """
    redactor = Redactor(settings_secrets())
    sys.stdout = RedactingStream(sys.stdout, redactor)
    sys.stderr = RedactingStream(sys.stderr, redactor)
    configure_logging(
        os.environ.get("COSTPLANE_LOG_LEVEL", "INFO"),
        "json" if os.environ.get("COSTPLANE_LOG_FORMAT") == "json" else "auto",
        redactor,
    )
    build_app()
    try:
        app()
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        sys.exit(2)
