"""A learnt per-minute level (integer EWMA with its variance), shared by the cost and token spike detectors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from costplane.streams.detectors.base import MINUTE_MS
from costplane.streams.detectors.config import DetectorConfig


@dataclass(slots=True)
class Baseline:
    """A learnt per-minute level (EWMA, integer) and how many minutes fed it."""

    level: int = 0
    var: int = 0  # EWMA of the squared deviation from the level (so noisy, small subjects need a bigger jump)
    minutes: int = 0
    last_seen: int = 0  # minute start of the last minute with traffic

    def row(self, key: tuple[str, ...]) -> list[Any]:
        return [list(key), self.level, self.var, self.minutes, self.last_seen]

    @classmethod
    def from_row(cls, level: Any, var: Any, minutes: Any, last_seen: Any) -> Baseline:
        return cls(int(level), int(var), int(minutes), int(last_seen))


def _ewma(old: int, value: int, alpha: Fraction) -> int:
    return old + round((value - old) * alpha)


def learn(base: Baseline, value: int, cfg: DetectorConfig, spiking: bool) -> None:
    """Move the level and its variance toward ``value`` (integer EWMA, deterministic).

    During warm-up the plain running mean (weight 1/n) is used, so a young baseline is not biased toward zero.
    While spiking, the level learns at a fifth of the rate (a lasting step becomes the new normal in tens of
    minutes) and the variance not at all (an incident is not noise).
    """
    alpha = Fraction(cfg.ewma_alpha)
    if base.minutes < cfg.warmup_minutes:
        alpha = max(alpha, Fraction(1, base.minutes + 1))
    deviation = value - base.level
    if spiking:
        alpha /= 5
    else:
        base.var = _ewma(base.var, deviation * deviation, alpha)
    base.level = _ewma(base.level, value, alpha)
    base.minutes += 1


def spiking(base: Baseline, value: int, floor: int, cfg: DetectorConfig) -> bool:
    """Above the floor, above ``spike_factor`` × the level, and ``spike_sigmas`` deviations above it."""
    if value < floor or value <= Fraction(cfg.spike_factor) * base.level:
        return False
    return Fraction(value - base.level) ** 2 > Fraction(cfg.spike_sigmas) ** 2 * base.var


def evict_idle(table: dict[Any, Baseline], minute: int, config_for: Callable[[str], DetectorConfig]) -> None:
    """Forget keys (tenant first) without traffic for their tenant's ``idle_evict_minutes``."""
    for key in [k for k, b in table.items() if b.last_seen < minute - config_for(k[0]).idle_evict_minutes * MINUTE_MS]:
        del table[key]
