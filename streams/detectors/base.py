"""The one interface every detector implements, and the small helpers their findings share.

A detector is pure: it counts priced events into the minute the clock assigns (:meth:`Detector.observe`), judges a
complete minute into :class:`Finding` objects (:meth:`Detector.judge`), and saves, restores and forgets what it has
learnt. Thresholds come per tenant from the :class:`Context` at judge time, so a changed threshold applies from the
next judged minute without losing any learnt state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from costplane.streams.core.findings import Contributor, Finding, Severity
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.clock import MINUTE_MS
from costplane.streams.detectors.config import DetectorConfig

__all__ = ["MINUTE_MS", "Context", "Detector", "Verdict", "finding"]


@dataclass(frozen=True, slots=True)
class Context:
    """What a detector may ask while judging: a tenant's thresholds, and whether a condition was reported active
    recently (then an inactive finding is worth building, so the lifecycle resolves it on evidence)."""

    config_for: Callable[[str], DetectorConfig]
    was_active: Callable[[str, str, Mapping[str, str]], bool]


class Detector(Protocol):
    """One detector: observe events, judge minutes, and keep its learnt state across restarts and rebalances.

    ``counts_events`` is False for a detector that judges only the shared subject-minute counts (its observe does
    nothing): the composer then leaves it out of the per-event loop, the worker's hot path.
    """

    counts_events: bool

    def observe(self, event: PricedEvent, minute: int, config: DetectorConfig) -> None:
        """Count one priced event into ``minute`` (its event-time minute, or the oldest still open)."""

    def judge(self, minute: int, context: Context) -> list[Finding]:
        """Findings of a complete minute (active, or inactive ones the clearing may need); then forget what
        expired."""

    def save(self) -> dict[str, list[Any]]:
        """Learnt state as plain JSON rows, each starting with a key whose first element is the tenant."""

    def load(self, data: Mapping[str, Any]) -> None:
        """Merge :meth:`save` output (what was learnt here wins)."""

    def forget(self, tenant: str) -> None:
        """Drop everything about a tenant (its partition moved to another worker)."""

    def tracked(self) -> dict[str, int]:
        """Sizes of the tables (for metrics and the memory-bound tests)."""


def usd(nanos: int) -> str:
    return str(Decimal(nanos).scaleb(-9))


def ratio(num: int, den: int) -> str:
    return str((Decimal(num) / Decimal(den)).quantize(Decimal("0.0001"))) if den else "0"


def tokens_of(p: PricedEvent) -> int:
    e = p.event
    return int(e.input_tokens + e.cached_input_tokens + e.cache_write_tokens + e.output_tokens + e.reasoning_tokens)


def prompt_of(p: PricedEvent) -> int:
    e = p.event
    return int(e.input_tokens + e.cached_input_tokens + e.cache_write_tokens)


def dedup_key(kind: str, tenant: str, labels: Mapping[str, str]) -> str:
    """Stable per condition and subject: ``kind|tenant=…|dim=value|…`` (labels in sorted order)."""
    return "|".join([kind, f"tenant={tenant}", *(f"{k}={v}" for k, v in sorted(labels.items()))])


class Unsaved:
    """Defaults of a detector whose state is short-lived and rebuilt from traffic: nothing to save or restore,
    no table worth reporting."""

    def save(self) -> dict[str, list[Any]]:
        return {}

    def load(self, data: Mapping[str, Any]) -> None:
        """Nothing saved, nothing to restore."""

    def tracked(self) -> dict[str, int]:
        return {}


def forget_open(open_minutes: dict[int, dict[Any, Any]], tenant: str) -> None:
    """Drop a tenant's counts from every open minute (keys are tuples starting with the tenant); the minutes stay
    open."""
    for minute in list(open_minutes):
        open_minutes[minute] = {k: v for k, v in open_minutes[minute].items() if k[0] != tenant}


def drop_tenant(table: MutableMapping[Any, Any], tenant: str) -> None:
    """Delete the keys of a table keyed by tuples starting with the tenant."""
    for key in [k for k in table if k[0] == tenant]:
        del table[key]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a finding says, apart from its identity (kind, tenant, labels) and its window."""

    active: bool
    severity: Severity
    summary: str
    numbers: dict[str, str]
    contributors: tuple[Contributor, ...]
    action: str


def finding(kind: str, tenant: str, labels: Mapping[str, str], start: int, end: int, verdict: Verdict) -> Finding:
    return Finding(
        kind=kind,
        dedup_key=dedup_key(kind, tenant, labels),
        tenant=tenant,
        active=verdict.active,
        severity=verdict.severity,
        summary=verdict.summary,
        window_start_ms=start,
        window_end_ms=end,
        subject={"tenant": tenant, **labels},
        numbers=verdict.numbers,
        contributors=verdict.contributors,
        suggested_action=verdict.action,
        runbook=f"docs/runbook.md#{kind.replace('_', '-')}",
    )
