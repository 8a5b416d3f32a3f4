"""price_mismatch: over the recent ``price_mismatch_minutes``, the provider billed a model's events at least
``price_mismatch_ratio`` more (or less) than the catalog prices them — a wrong or stale catalog entry, found by the
money."""

from __future__ import annotations

from collections import deque

from costplane.streams.core.findings import Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import (
    MINUTE_MS,
    Context,
    Unsaved,
    Verdict,
    drop_tenant,
    finding,
    forget_open,
    ratio,
    usd,
)
from costplane.streams.detectors.config import DetectorConfig

Key = tuple[str, str, str]  # (tenant, provider, model)
ACTION = (
    "Compare the model's catalog entry with the provider's price list (costplane prices show MODEL); fix it "
    "with an override or a new catalog, then re-rate the range (costplane rerate)."
)


class PriceMismatch(Unsaved):
    """Billed and computed sums of events carrying a provider-billed cost: per open minute, then per judged
    minute over a sliding window."""

    counts_events = True

    def __init__(self) -> None:
        #: minute -> (tenant, provider, model) -> [billed, computed, events] of events carrying a billed cost
        self.open: dict[int, dict[Key, list[int]]] = {}
        self.recent: dict[Key, deque[tuple[int, int, int, int]]] = {}  # recent judged minutes

    def observe(self, event: PricedEvent, minute: int, config: DetectorConfig) -> None:
        e = event.event
        if not event.unpriced and e.billed_cost_nanos is not None:
            sums = self.open.setdefault(minute, {}).setdefault((e.tenant, e.provider, e.model), [0, 0, 0])
            sums[0] += e.billed_cost_nanos
            sums[1] += event.cost_nanos
            sums[2] += 1

    def judge(self, minute: int, context: Context) -> list[Finding]:
        out: list[Finding] = []
        for key, (billed, computed, events) in self.open.pop(minute, {}).items():
            self.recent.setdefault(key, deque()).append((minute, billed, computed, events))
        for key in list(self.recent):
            f = self._judge_key(key, minute, context)
            if f is not None:
                out.append(f)
        return out

    def _judge_key(self, key: Key, minute: int, context: Context) -> Finding | None:
        tenant, provider, model = key
        cfg = context.config_for(tenant)
        window = self.recent[key]
        while window and window[0][0] <= minute - cfg.price_mismatch_minutes * MINUTE_MS:
            window.popleft()
        labels = {"provider": provider, "model": model}
        if not window:
            del self.recent[key]
            if context.was_active("price_mismatch", tenant, labels):
                return _finding(tenant, labels, False, (0, 0, 0), minute, cfg)
            return None
        billed = sum(c[1] for c in window)
        computed = sum(c[2] for c in window)
        events = sum(c[3] for c in window)
        active = (
            events >= cfg.price_mismatch_min_events
            and computed > 0
            and abs(billed - computed) >= cfg.price_mismatch_ratio * computed
        )
        if active or context.was_active("price_mismatch", tenant, labels):
            return _finding(tenant, labels, active, (billed, computed, events), minute, cfg)
        return None

    def forget(self, tenant: str) -> None:
        forget_open(self.open, tenant)
        drop_tenant(self.recent, tenant)


def _finding(
    tenant: str, labels: dict[str, str], active: bool, sums: tuple[int, int, int], minute: int, cfg: DetectorConfig
) -> Finding:
    billed, computed, events = sums
    gap = ratio(billed - computed, computed) if computed else "n/a"
    return finding(
        "price_mismatch",
        tenant,
        labels,
        minute - (cfg.price_mismatch_minutes - 1) * MINUTE_MS,
        minute + MINUTE_MS,
        Verdict(
            active,
            "warning",
            f"{labels['provider']}/{labels['model']}: billed {usd(billed)} for {events} events the catalog prices at "
            f"{usd(computed)} ({gap} difference)",
            {
                "billed_nanos": str(billed),
                "computed_nanos": str(computed),
                "events": str(events),
                "difference": gap,
                "threshold": str(cfg.price_mismatch_ratio),
            },
            (),
            ACTION,
        ),
    )
