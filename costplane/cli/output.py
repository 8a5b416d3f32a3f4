"""Shared CLI output helpers: rich for people, plain JSON for machines."""

from __future__ import annotations

import json
import sys
from typing import Any

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
