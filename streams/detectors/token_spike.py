"""token_spike: a tenant's tokens per minute on one model far above the learnt level (the same test as the cost
spike, with ``token_spike_floor``): the volume that runs into a provider's tokens-per-minute limit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costplane.streams.core.findings import Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import (
    MINUTE_MS,
    Context,
    Verdict,
    drop_tenant,
    finding,
    forget_open,
    ratio,
    tokens_of,
)
from costplane.streams.detectors.baseline import Baseline, evict_idle, learn, spiking
from costplane.streams.detectors.config import DetectorConfig

ModelKey = tuple[str, str]  # (tenant, model)


class TokenSpike:
    """Per-(tenant, model) token counts of the open minutes and their learnt levels."""

    counts_events = True

    def __init__(self) -> None:
        self.open: dict[int, dict[ModelKey, list[int]]] = {}  # minute -> (tenant, model) -> [tokens, attempts]
        self.baselines: dict[ModelKey, Baseline] = {}

    def observe(self, event: PricedEvent, minute: int, config: DetectorConfig) -> None:
        cell = self.open.setdefault(minute, {}).setdefault((event.event.tenant, event.event.model), [0, 0])
        cell[0] += tokens_of(event)
        cell[1] += 1

    def judge(self, minute: int, context: Context) -> list[Finding]:
        models = self.open.pop(minute, {})
        out: list[Finding] = []
        for key in set(models) | set(self.baselines):
            f = self._judge_model(key, models.get(key), minute, context)
            if f is not None:
                out.append(f)
        evict_idle(self.baselines, minute, context.config_for)
        return out

    def _judge_model(self, key: ModelKey, cell: list[int] | None, minute: int, context: Context) -> Finding | None:
        tenant, model = key
        cfg = context.config_for(tenant)
        tokens = cell[0] if cell else 0
        base = self.baselines.get(key)
        if base is None:
            if cell is None:
                return None
            base = self.baselines[key] = Baseline(last_seen=minute)
        out: Finding | None = None
        is_spiking = False
        labels = {"model": model}
        if base.minutes >= cfg.warmup_minutes:
            is_spiking = spiking(base, tokens, cfg.token_spike_floor, cfg)
            if is_spiking or context.was_active("token_spike", tenant, labels):
                factor = ratio(tokens, base.level) if base.level else "inf"
                v = Verdict(
                    is_spiking,
                    "warning",
                    f"{tokens} tokens in a minute on {model}, {factor}× the usual {base.level}",
                    {
                        "tokens": str(tokens),
                        "baseline_tokens": str(base.level),
                        "factor": factor,
                        "threshold_factor": str(cfg.spike_factor),
                        "attempts": str(cell[1] if cell else 0),
                    },
                    (),
                    "Check which feature drives the model's volume; watch the provider's tokens-per-minute limit.",
                )
                out = finding("token_spike", tenant, labels, minute, minute + MINUTE_MS, v)
        learn(base, tokens, cfg, is_spiking)
        if cell is not None:
            base.last_seen = minute
        return out

    def save(self) -> dict[str, list[Any]]:
        return {"models": [b.row(k) for k, b in self.baselines.items()]}

    def load(self, data: Mapping[str, Any]) -> None:
        for key, *row in data.get("models", []):
            tenant, model = key
            self.baselines.setdefault((tenant, model), Baseline.from_row(*row))

    def forget(self, tenant: str) -> None:
        forget_open(self.open, tenant)
        drop_tenant(self.baselines, tenant)

    def tracked(self) -> dict[str, int]:
        return {"models": len(self.baselines)}
