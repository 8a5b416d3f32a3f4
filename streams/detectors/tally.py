"""Per-subject minute counts (tenant × the configured dimensions), shared by the retry-storm, cost-spike and
cache-drop detectors: one pass over each event fills what all three judge.

Each minute also keeps its biggest contributors (user, feature, model) in bounded memory, so a finding can name
who drove it however many users a minute has.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from costplane.streams.core.findings import Contributor
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import forget_open, prompt_of, tokens_of
from costplane.streams.detectors.config import ATTR, DetectorConfig

_RANKED_METRICS = (0, 1, 3)  # what findings rank contributors by: cost, tokens, retries (see SubjectMinute.contrib)

Subject = tuple[str, ...]


@dataclass(slots=True)
class SubjectMinute:
    """One subject's counts in one minute (all integers, so sums are exact)."""

    attempts: int = 0
    retries: int = 0
    failed: int = 0
    failed_tokens: int = 0
    failed_nanos: int = 0
    tokens: int = 0
    nanos: int = 0
    cached: int = 0
    prompt: int = 0
    # (dimension, value) -> [nanos, tokens, attempts, retries]
    contrib: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: Per metric, the most a contributor dropped from ``contrib`` had; a newcomer starts there (see shrink). All
    #: zero while nothing was dropped, and then every figure is exact.
    floor: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def add(self, p: PricedEvent, contrib_dims: Sequence[str], tracked: int) -> None:
        e = p.event
        tokens = tokens_of(p)
        retry = 1 if e.attempt > 1 else 0
        self.attempts += 1
        self.retries += retry
        if e.status != "ok":
            self.failed += 1
            self.failed_tokens += tokens
            self.failed_nanos += p.cost_nanos
        self.tokens += tokens
        self.nanos += p.cost_nanos
        self.cached += e.cached_input_tokens
        self.prompt += prompt_of(p)
        for dim in contrib_dims:
            value = getattr(e, ATTR.get(dim, dim), None)
            if value is None:
                continue
            key = (dim, str(value))
            cell = self.contrib.get(key)
            if cell is None:
                if len(self.contrib) >= 4 * tracked:
                    self.shrink(tracked)  # before the newcomer joins (it starts at the floor)
                cell = self.contrib[key] = self.floor[:]
            cell[0] += p.cost_nanos
            cell[1] += tokens
            cell[2] += 1
            cell[3] += retry

    def shrink(self, keep: int) -> None:
        """Keep the ``keep`` biggest contributors by cost, by tokens and by retries; forget the rest.

        Why: the findings name the top few, and a busy subject's minute has one contributor per user — a minute
        of fresh users held hundreds of thousands of entries only to drop them when it closed (most of the worker's
        memory swing). This is Space-Saving (Metwally et al.) trimmed in batches: ``floor`` is, per metric, the
        most any dropped contributor had, and a contributor (re)entering starts at ``floor``. So every figure held
        is at least the true one and over it by at most ``floor``, and anyone not held had at most ``floor``:
        a contributor dropped again and again (a client making many cheap calls among fresh users) keeps its
        total and rises into the top instead of vanishing. Findings report the floors beside the contributors.
        """
        kept: set[tuple[str, str]] = set()
        for metric in _RANKED_METRICS:
            # What heapq.nlargest returns (ties in insertion order: its documented equivalent), in half the time:
            # fresh users make this the detectors' biggest single cost.
            ranked = sorted(self.contrib.items(), key=lambda kv: kv[1][metric], reverse=True)[:keep]
            kept.update(k for k, cell in ranked if cell[metric] > 0)  # a zero ranks nobody (no retries, say)
        floor = self.floor
        for key in [k for k in self.contrib if k not in kept]:
            cell = self.contrib.pop(key)
            for metric in range(4):
                if cell[metric] > floor[metric]:
                    floor[metric] = cell[metric]

    def bounds(self) -> dict[str, str]:
        """The finding numbers saying how far each contributor figure may be overstated (none while all are exact)."""
        floor = self.floor
        if not any(floor):
            return {}
        return {
            "contributors_cost_nanos_over_by_at_most": str(floor[0]),
            "contributors_tokens_over_by_at_most": str(floor[1]),
            "contributors_attempts_over_by_at_most": str(floor[2]),
        }

    def top(self, metric: int, cfg: DetectorConfig) -> tuple[Contributor, ...]:
        """Top contributors by ``metric`` (0 cost, 1 tokens, 2 attempts, 3 retries), cost as tie-breaker."""
        # nsmallest, not a full sort: a busy subject's minute has one contributor per user (thousands).
        ranked = heapq.nsmallest(
            cfg.top_contributors, self.contrib.items(), key=lambda kv: (-kv[1][metric], -kv[1][0], kv[0])
        )
        return tuple(
            Contributor("user_id" if dim == "user" else dim, value, v[0], v[1], v[2])
            for (dim, value), v in ranked
            if v[metric] > 0
        )


def labels_of(subject: Subject, cfg: DetectorConfig) -> dict[str, str]:
    """A subject's dimensions by name (the tenant is the finding's own field)."""
    return dict(zip(cfg.dimensions, subject[1:], strict=False))


class SubjectMinutes:
    """The open minutes' per-subject counts; the composer closes a minute once every detector has judged it."""

    def __init__(self) -> None:
        self.open: dict[int, dict[Subject, SubjectMinute]] = {}
        self._dims: dict[str, tuple[tuple[str, ...], list[str]]] = {}  # tenant -> (event fields, contributor dims)

    def observe(self, p: PricedEvent, minute: int, cfg: DetectorConfig) -> None:
        e = p.event
        dims = self._dims.get(e.tenant)
        if dims is None:
            dims = self._dims[e.tenant] = (
                tuple(ATTR.get(d, d) for d in cfg.dimensions),
                [d for d in ("user", "feature", "model") if d not in cfg.dimensions],
            )
        fields, contrib_dims = dims
        subject = (e.tenant, *(str(getattr(e, f, None) or "-") for f in fields))
        subjects = self.open.get(minute)
        if subjects is None:
            subjects = self.open[minute] = {}
        data = subjects.get(subject)
        if data is None:
            data = subjects[subject] = SubjectMinute()
        data.add(p, contrib_dims, cfg.contributors_tracked)

    def minute(self, minute: int) -> dict[Subject, SubjectMinute]:
        return self.open.get(minute, {})

    def close(self, minute: int) -> None:
        self.open.pop(minute, None)

    def reconfigured(self, tenant: str | None) -> None:
        """A tenant's thresholds changed (None: the default's, so every tenant's may have): recompute its dims."""
        if tenant is None:
            self._dims.clear()
        else:
            self._dims.pop(tenant, None)

    def forget(self, tenant: str) -> None:
        forget_open(self.open, tenant)
