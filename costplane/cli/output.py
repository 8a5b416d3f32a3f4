"""Shared CLI output helpers: rich for people, plain JSON for machines."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console


def console(stderr: bool = False) -> Console:
    """A rich console (stderr for progress and errors so stdout stays clean for JSON)."""
    return Console(stderr=stderr, highlight=False)


def print_json(data: Any) -> None:
    """Machine output: compact, stable key order, one document on stdout."""
    sys.stdout.write(json.dumps(data, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
