"""The one error a report request can raise before or while it runs: shown as one line, exit status 2."""

from __future__ import annotations


class ReportError(ValueError):
    """A report request that cannot be run (unknown report or dimension, bad time or range, unknown tenant)."""
