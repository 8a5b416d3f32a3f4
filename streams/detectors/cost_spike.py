"""cost_spike: a subject's spend in a minute far above its learnt level (``spike_factor`` × and ``spike_sigmas``
deviations above it, and at least ``spike_floor_nanos``). The learnt levels are the state worth saving: without
them a restarted worker stays silent for ``warmup_minutes``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from costplane.streams.core.findings import Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import MINUTE_MS, Context, Verdict, drop_tenant, finding, ratio, usd
from costplane.streams.detectors.baseline import Baseline, evict_idle, learn, spiking
from costplane.streams.detectors.config import DetectorConfig
from costplane.streams.detectors.tally import Subject, SubjectMinute, SubjectMinutes, labels_of


class CostSpike:
    """Per-subject spend baselines over the shared subject-minute counts."""

    counts_events = False

    def __init__(self, tally: SubjectMinutes) -> None:
        self.tally = tally
        self.baselines: dict[Subject, Baseline] = {}

    def observe(self, event: PricedEvent, minute: int, config: DetectorConfig) -> None:
        """Counted by the shared tally."""

    def judge(self, minute: int, context: Context) -> list[Finding]:
        """Every subject with traffic or a baseline: a quiet minute is judged as zero (baselines decay)."""
        subjects = self.tally.minute(minute)
        out: list[Finding] = []
        for subject in set(subjects) | set(self.baselines):
            f = self._judge_subject(subject, subjects.get(subject), minute, context)
            if f is not None:
                out.append(f)
        evict_idle(self.baselines, minute, context.config_for)
        return out

    def _judge_subject(
        self, subject: Subject, m: SubjectMinute | None, minute: int, context: Context
    ) -> Finding | None:
        tenant = subject[0]
        cfg = context.config_for(tenant)
        base = self.baselines.get(subject)
        if base is None:
            if m is None:
                return None
            base = self.baselines[subject] = Baseline(last_seen=minute)
        data = m or SubjectMinute()
        out: Finding | None = None
        is_spiking = False
        if base.minutes >= cfg.warmup_minutes:
            labels = labels_of(subject, cfg)
            is_spiking = spiking(base, data.nanos, cfg.spike_floor_nanos, cfg)
            if is_spiking or context.was_active("cost_spike", tenant, labels):
                out = finding(
                    "cost_spike", tenant, labels, minute, minute + MINUTE_MS, verdict(data, base, is_spiking, cfg)
                )
        learn(base, data.nanos, cfg, is_spiking)
        if m is not None:
            base.last_seen = minute
        return out

    def save(self) -> dict[str, list[Any]]:
        return {"subjects": [b.row(k) for k, b in self.baselines.items()]}

    def load(self, data: Mapping[str, Any]) -> None:
        for key, *row in data.get("subjects", []):
            self.baselines.setdefault(tuple(key), Baseline.from_row(*row))

    def forget(self, tenant: str) -> None:
        drop_tenant(self.baselines, tenant)

    def tracked(self) -> dict[str, int]:
        return {"subjects": len(self.baselines)}


def verdict(data: SubjectMinute, base: Baseline, active: bool, cfg: DetectorConfig) -> Verdict:
    factor = ratio(data.nanos, base.level) if base.level else "inf"
    return Verdict(
        active,
        "critical" if data.nanos > 5 * base.level else "warning",
        f"${usd(data.nanos)} in a minute, {factor}× the usual ${usd(base.level)}",
        {
            "cost_nanos": str(data.nanos),
            "cost_usd": usd(data.nanos),
            "baseline_nanos": str(base.level),
            "baseline_usd": usd(base.level),
            "factor": factor,
            "baseline_stddev_usd": usd(math.isqrt(base.var)),
            "threshold_factor": str(cfg.spike_factor),
            "floor_usd": usd(cfg.spike_floor_nanos),
            "attempts": str(data.attempts),
            "tokens": str(data.tokens),
            **data.bounds(),
        },
        data.top(0, cfg),
        "Find the top contributor; set or lower a budget with action degrade or block for it.",
    )
