"""Shared formatting for people: money from nano-USD, times from epoch millis, the runbook link."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from costplane.streams.alerting.model import AlertEvent

NANOS_PER_USD = Decimal(1_000_000_000)


def usd(cost_nanos: int) -> str:
    """Exact dollars for display, e.g. 1234567 → ``$0.001234567``; whole cents shown with two decimals."""
    value = Decimal(cost_nanos) / NANOS_PER_USD
    if value == value.quantize(Decimal("0.01")):
        return f"${value.quantize(Decimal('0.01'))}"
    return f"${value.normalize():f}"


def iso(ms: int) -> str:
    """UTC ISO-8601 with milliseconds, e.g. ``2026-11-23T00:40:00.000Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def runbook_url(event: AlertEvent, base_url: str | None) -> str:
    """Absolute runbook link when ``base_url`` is set (e.g. the docs site), else the event's own reference.

    ``docs/runbook.md#retry-storm`` with base ``https://git.example/costplane/blob/main/`` becomes
    ``https://git.example/costplane/blob/main/docs/runbook.md#retry-storm``. Already-absolute links stay as they are.
    """
    ref = event.runbook or f"docs/runbook.md#{event.kind.replace('_', '-')}"
    if ref.startswith(("http://", "https://")) or not base_url:
        return ref
    return base_url.rstrip("/") + "/" + ref.lstrip("/")
