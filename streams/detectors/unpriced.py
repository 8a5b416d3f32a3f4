"""unpriced_model: attempts of a model the catalog has no price for (their spend counts as $0 until re-rated)."""

from __future__ import annotations

from costplane.streams.core.findings import Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import MINUTE_MS, Context, Unsaved, Verdict, finding, forget_open
from costplane.streams.detectors.config import DetectorConfig

ACTION = "Add the model to the price catalog (costplane prices import, or an override), then re-rate the window."


class UnpricedModel(Unsaved):
    """Counts of unpriced attempts per (tenant, provider, model) in the open minutes; nothing learnt."""

    counts_events = True

    def __init__(self) -> None:
        self.open: dict[int, dict[tuple[str, str, str], int]] = {}

    def observe(self, event: PricedEvent, minute: int, config: DetectorConfig) -> None:
        if event.unpriced:
            e = event.event
            bucket = self.open.setdefault(minute, {})
            key = (e.tenant, e.provider, e.model)
            bucket[key] = bucket.get(key, 0) + 1

    def judge(self, minute: int, context: Context) -> list[Finding]:
        return [
            finding(
                "unpriced_model",
                tenant,
                {"provider": provider, "model": model},
                minute,
                minute + MINUTE_MS,
                Verdict(
                    True,
                    "warning",
                    f"{count} attempts of {provider}/{model} had no price: their spend is counted as $0",
                    {"attempts": str(count)},
                    (),
                    ACTION,
                ),
            )
            for (tenant, provider, model), count in self.open.pop(minute, {}).items()
        ]

    def forget(self, tenant: str) -> None:
        forget_open(self.open, tenant)
