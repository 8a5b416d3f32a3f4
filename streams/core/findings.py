"""What detectors report: a condition that is active or not, per dedup key, at a point in time.

Detectors are pure: plain data in, ``Finding`` objects out, with an injected clock. Turning findings into alert
*lifecycle* events (one trigger when a condition starts, one resolve when it ends, cooldown against flapping) is
the alert lifecycle's job, not the detector's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["info", "warning", "critical"]


@dataclass(slots=True, frozen=True)
class Contributor:
    """One top contributor to a finding, e.g. dimension="user_id", value="u-17", cost_nanos=…, tokens=…."""

    dimension: str
    value: str
    cost_nanos: int = 0
    tokens: int = 0
    attempts: int = 0


@dataclass(slots=True, frozen=True)
class Finding:
    """A detector's verdict for one subject (e.g. tenant × feature × model) in one evaluation window.

    ``kind`` is the detector (retry_storm, runaway_loop, cost_spike, token_spike, cache_hit_drop, user_share,
    unpriced_model, price_mismatch, budget_forecast). ``dedup_key`` is stable for the same condition on the same
    subject, so the lifecycle can edge-trigger on it. ``active`` says whether the condition holds now.
    """

    kind: str
    dedup_key: str
    tenant: str
    active: bool
    severity: Severity
    summary: str
    window_start_ms: int
    window_end_ms: int
    subject: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, str] = field(default_factory=dict)  # exact values as strings (Decimal-safe)
    contributors: tuple[Contributor, ...] = ()
    suggested_action: str = ""
    runbook: str = ""  # anchor in docs/runbook.md, e.g. "docs/runbook.md#retry-storm"
