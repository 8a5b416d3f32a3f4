"""retry_storm: a subject-minute where more than ``retry_ratio`` of the attempts were retries (and at least
``min_retries`` of them, over at least ``min_attempts``): failing calls paid for again and again."""

from __future__ import annotations

from fractions import Fraction

from costplane.streams.core.findings import Finding, Severity
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import MINUTE_MS, Context, Unsaved, Verdict, finding, ratio, usd
from costplane.streams.detectors.config import DetectorConfig
from costplane.streams.detectors.tally import SubjectMinute, SubjectMinutes, labels_of


class RetryStorm(Unsaved):
    """Reads the shared subject-minute counts; learns nothing, so it saves nothing."""

    counts_events = False

    def __init__(self, tally: SubjectMinutes) -> None:
        self.tally = tally

    def observe(self, event: PricedEvent, minute: int, config: DetectorConfig) -> None:
        """Counted by the shared tally."""

    def judge(self, minute: int, context: Context) -> list[Finding]:
        out: list[Finding] = []
        for subject, data in self.tally.minute(minute).items():
            cfg = context.config_for(subject[0])
            if data.attempts >= cfg.min_attempts:
                out.append(
                    finding(
                        "retry_storm",
                        subject[0],
                        labels_of(subject, cfg),
                        minute,
                        minute + MINUTE_MS,
                        verdict(data, cfg),
                    )
                )
        return out

    def forget(self, tenant: str) -> None:
        """Nothing kept beyond the shared tally."""


def verdict(data: SubjectMinute, cfg: DetectorConfig) -> Verdict:
    share = Fraction(data.retries, data.attempts)
    active = share > Fraction(cfg.retry_ratio) and data.retries >= cfg.min_retries
    severity: Severity = "critical" if share > 4 * Fraction(cfg.retry_ratio) else "warning"
    return Verdict(
        active,
        severity,
        f"{ratio(data.retries, data.attempts)} of {data.attempts} attempts were retries; failed attempts "
        f"cost ${usd(data.failed_nanos)}",
        {
            "attempts": str(data.attempts),
            "retries": str(data.retries),
            "retry_ratio": ratio(data.retries, data.attempts),
            "threshold": str(cfg.retry_ratio),
            "failed_attempts": str(data.failed),
            "wasted_tokens": str(data.failed_tokens),
            "wasted_cost_nanos": str(data.failed_nanos),
            "wasted_usd": usd(data.failed_nanos),
            **data.bounds(),
        },
        data.top(3, cfg),
        "Check the provider status and the failing statuses; cap retries with backoff and jitter.",
    )
