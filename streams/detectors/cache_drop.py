"""cache_hit_drop: a subject's prompt-cache hit rate fell below ``cache_hit_floor`` and at least
``cache_drop_points`` below its usual rate (judged on minutes of at least ``cache_min_prompt_tokens`` prompt
tokens, and only where the usual rate was at or above the floor): the prefix stopped being cached."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from costplane.streams.core.findings import Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import MINUTE_MS, Context, Verdict, drop_tenant, finding
from costplane.streams.detectors.baseline import Baseline
from costplane.streams.detectors.config import DetectorConfig
from costplane.streams.detectors.tally import Subject, SubjectMinute, SubjectMinutes, labels_of


@dataclass(slots=True)
class CacheBaseline:
    rate: Fraction = Fraction(0)
    minutes: int = 0


class CacheDrop:
    """Per-subject usual hit rates; a subject's rate is forgotten with its spend baseline (``subjects``)."""

    counts_events = False

    def __init__(self, tally: SubjectMinutes, subjects: Mapping[Subject, Baseline]) -> None:
        self.tally, self.subjects = tally, subjects
        self.rates: dict[Subject, CacheBaseline] = {}

    def observe(self, event: PricedEvent, minute: int, config: DetectorConfig) -> None:
        """Counted by the shared tally."""

    def judge(self, minute: int, context: Context) -> list[Finding]:
        out: list[Finding] = []
        for subject, data in self.tally.minute(minute).items():
            cfg = context.config_for(subject[0])
            if data.prompt >= cfg.cache_min_prompt_tokens:
                f = self._judge_subject(subject, data, minute, cfg)
                if f is not None:
                    out.append(f)
        for subject in [s for s in self.rates if s not in self.subjects]:
            del self.rates[subject]
        return out

    def _judge_subject(self, subject: Subject, data: SubjectMinute, minute: int, cfg: DetectorConfig) -> Finding | None:
        rate = Fraction(data.cached, data.prompt)
        base = self.rates.setdefault(subject, CacheBaseline(rate=rate))
        floor = Fraction(cfg.cache_hit_floor)
        out: Finding | None = None
        active = False
        if base.minutes >= cfg.warmup_minutes and base.rate >= floor:
            active = rate < floor and base.rate - rate >= Fraction(cfg.cache_drop_points)
            labels = labels_of(subject, cfg)
            out = finding(
                "cache_hit_drop", subject[0], labels, minute, minute + MINUTE_MS, verdict(data, rate, base, active, cfg)
            )
        if not active:  # the usual rate is learnt from normal minutes only
            alpha = Fraction(cfg.ewma_alpha)
            if base.minutes < cfg.warmup_minutes:
                alpha = max(alpha, Fraction(1, base.minutes + 1))
            base.rate = base.rate + (rate - base.rate) * alpha
            base.rate = base.rate.limit_denominator(1_000_000)
        base.minutes += 1
        return out

    def save(self) -> dict[str, list[Any]]:
        return {"cache": [[list(k), c.rate.numerator, c.rate.denominator, c.minutes] for k, c in self.rates.items()]}

    def load(self, data: Mapping[str, Any]) -> None:
        for key, num, den, minutes in data.get("cache", []):
            self.rates.setdefault(tuple(key), CacheBaseline(Fraction(int(num), int(den)), int(minutes)))

    def forget(self, tenant: str) -> None:
        drop_tenant(self.rates, tenant)

    def tracked(self) -> dict[str, int]:
        return {}


def _decimal(rate: Fraction) -> str:
    return f"{Decimal(rate.numerator) / Decimal(rate.denominator):.4f}"


def verdict(data: SubjectMinute, rate: Fraction, base: CacheBaseline, active: bool, cfg: DetectorConfig) -> Verdict:
    return Verdict(
        active,
        "warning",
        f"prompt-cache hit rate {float(rate):.1%} (usually {float(base.rate):.1%})",
        {
            "hit_rate": _decimal(rate),
            "baseline_hit_rate": _decimal(base.rate),
            "cached_tokens": str(data.cached),
            "prompt_tokens": str(data.prompt),
            "floor": str(cfg.cache_hit_floor),
            "cost_nanos": str(data.nanos),
            **data.bounds(),
        },
        data.top(1, cfg),
        "Look for a change that moved variable content before the cached prefix (timestamps, ids, "
        "reordered tools) and restore a stable prefix.",
    )
