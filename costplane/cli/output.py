"""Shared CLI output helpers: rich for people, plain JSON for machines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console


def console(stderr: bool = False) -> Console:
    """A rich console (stderr for progress and errors so stdout stays clean for JSON).

    Piped output (CI logs, ``| less``) gets 120 columns instead of rich's 80 so tables are not truncated.
    """
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 120
    return Console(stderr=stderr, highlight=False, width=width)


def print_json(data: Any) -> None:
    """Machine output: compact, stable key order, one document on stdout."""
    sys.stdout.write(json.dumps(data, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def usage_error(message: str) -> typer.Exit:
    """Say what is wrong with the input on one red line of stderr; raise the returned exit (status 2)."""
    typer.secho(" ".join(message.split())[:500], fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def read_text(file: Path) -> str:
    """The file's text, or a usage error naming the file and why it cannot be read."""
    try:
        return file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise usage_error(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
