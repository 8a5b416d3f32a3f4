"""Detectors: the leaks that dashboards miss, found per closed minute of event time.

Pure: priced events in (:meth:`Detectors.observe`), :class:`Finding` objects out (:meth:`Detectors.evaluate`),
with the caller's clock. The worker observes every batch and evaluates on a timer; the alert lifecycle turns the
reported *levels* into edges (one trigger, one resolve).

This composer only wires: the :class:`MinuteClock` says which minute each event counts in and which minutes are
complete; every detector (one module each, one :class:`Detector` interface) observes every event and judges every
complete minute with the thresholds in force for each tenant; :class:`Clearing` turns the findings into reported
levels. Thresholds change at run time with :meth:`Detectors.set_config` (the worker follows the detectors topic):
a change applies from the next judged minute, and nothing learnt is lost.

Memory is bounded: subjects (tenant × the configured dimensions), models, retried requests and sessions idle for
longer than their TTL are evicted, and retried requests and sessions are capped in number. Per-user day totals
(for the user-share detector) are kept only for tenants that have a tenant-wide daily budget and are dropped when
that day ends. Baselines are learnt in memory and saved by the worker per tenant (:meth:`Detectors.baselines`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from costplane.budgets import Budget, WindowCache
from costplane.streams.core.findings import Finding
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors.base import Context, Detector
from costplane.streams.detectors.cache_drop import CacheDrop
from costplane.streams.detectors.clearing import Clearing
from costplane.streams.detectors.clock import MinuteClock
from costplane.streams.detectors.config import DetectorConfig, TenantConfigs
from costplane.streams.detectors.cost_spike import CostSpike
from costplane.streams.detectors.forecast import Forecast
from costplane.streams.detectors.price_mismatch import PriceMismatch
from costplane.streams.detectors.retry_storm import RetryStorm
from costplane.streams.detectors.runaway_requests import RunawayRequests
from costplane.streams.detectors.runaway_sessions import RunawaySessions
from costplane.streams.detectors.tally import SubjectMinutes
from costplane.streams.detectors.token_spike import TokenSpike
from costplane.streams.detectors.unpriced import UnpricedModel
from costplane.streams.detectors.user_share import UserShare


class Detectors:
    """All detectors of one worker over the events it observes (its partitions' tenants).

    ``configs`` overrides the default :class:`DetectorConfig` per tenant. ``budgets`` (also via
    :meth:`set_budgets`) feed the user-share and forecast detectors.
    """

    def __init__(
        self,
        config: DetectorConfig | None = None,
        *,
        configs: Mapping[str, DetectorConfig] | None = None,
        budgets: Iterable[Budget] = (),
    ) -> None:
        self.configs = TenantConfigs(config, configs)
        self.clock = MinuteClock()
        self.tally = SubjectMinutes()
        self.clearing = Clearing()
        windows = WindowCache()
        spike = CostSpike(self.tally)
        self.user_share = UserShare(windows)
        self.forecast = Forecast(windows)
        #: In judging order (the order of a minute's findings).
        self.detectors: tuple[Detector, ...] = (
            RetryStorm(self.tally),
            spike,
            CacheDrop(self.tally, spike.baselines),
            TokenSpike(),
            UnpricedModel(),
            PriceMismatch(),
            RunawayRequests(),
            RunawaySessions(),
            self.user_share,
            self.forecast,
        )
        self._observers = tuple(d.observe for d in self.detectors if d.counts_events)
        self._context = Context(self.configs, self.clearing.was_active)
        self.set_budgets(budgets)

    # -- configuration ---------------------------------------------------------------------------------------
    def config_for(self, tenant: str) -> DetectorConfig:
        return self.configs(tenant)

    def set_config(self, tenant: str, config: DetectorConfig | None) -> None:
        """Set (or with None, reset to the default) one tenant's thresholds; applies from the next minute."""
        self.configs.set(tenant, config)
        self.tally.reconfigured(tenant)

    def replace_configs(self, default: DetectorConfig, tenants: Mapping[str, DetectorConfig]) -> None:
        """All thresholds at once (the worker, after reading the detectors topic): tenants not named get
        ``default``; applies from the next minute."""
        self.configs.default = default
        self.configs.tenants = dict(tenants)
        self.tally.reconfigured(None)

    def set_budgets(self, budgets: Iterable[Budget]) -> None:
        """Replace the budgets (the worker calls this on every budgets-topic change)."""
        budgets = list(budgets)
        self.forecast.set_budgets(budgets)
        self.user_share.set_budgets(budgets)

    def seed_month_spend(self, budget_id: str, member: str, spent: int, at_ms: int) -> None:
        """Start a monthly budget's month-to-date from a total known without its days (see :meth:`Forecast.seed`)."""
        self.forecast.seed(budget_id, member, spent, at_ms)

    # -- observing and judging -------------------------------------------------------------------------------
    def observe(self, events: Iterable[PricedEvent]) -> None:
        """Count a batch of priced events (the worker calls this once per batch, after pricing)."""
        batch = list(events)
        minutes = self.clock.place([p.event.occurred_at for p in batch])
        tenants, default, tally, observers = self.configs.tenants, self.configs.default, self.tally, self._observers
        for p, minute in zip(batch, minutes, strict=True):
            cfg = tenants.get(p.event.tenant, default)
            tally.observe(p, minute, cfg)
            for observe in observers:
                observe(p, minute, cfg)

    def evaluate(self, now_ms: int) -> list[Finding]:
        """Judge every minute that is complete; return their findings (see :meth:`evaluate_minutes`)."""
        return [f for _, findings in self.evaluate_minutes(now_ms) for f in findings]

    def evaluate_minutes(self, now_ms: int) -> list[tuple[int, list[Finding]]]:
        """Judge every minute that is complete (see :meth:`MinuteClock.due`); return ``(minute start, its
        findings)`` in minute order.

        Per minute, so the caller can run the alert lifecycle on event time (the end of each judged minute): a
        replayed backlog then resolves and cools down minute by minute, as it did live, and yields the same
        alert ids. Findings are active ones, and clearing ones for recent keys.
        """
        judged: list[tuple[int, list[Finding]]] = []
        for minute in self.clock.due(now_ms, self.configs.default.grace_ms):
            judged.append((minute, self._judge_minute(minute)))
            self.clock.judged(minute)
        return judged

    def _judge_minute(self, minute: int) -> list[Finding]:
        current: list[Finding] = []
        for detector in self.detectors:
            current.extend(detector.judge(minute, self._context))
        self.tally.close(minute)
        return self.clearing.report(current, minute, self.configs)

    # -- state -----------------------------------------------------------------------------------------------
    def baselines(self) -> dict[str, Any]:
        """The learnt state as plain JSON (the worker checkpoints it per tenant so a restart skips the warm-up).

        Only what takes long to learn is kept: spend and token levels with their variance, cache-hit rates, and
        each monthly budget member's spend per day. Open minutes, retried requests and sessions are short-lived
        and rebuilt from traffic.
        """
        out: dict[str, Any] = {}
        for detector in self.detectors:
            out.update(detector.save())
        return out

    def load_baselines(self, data: Mapping[str, Any]) -> None:
        """Restore :meth:`baselines` output (entries already learnt here are kept; month spend is added)."""
        for detector in self.detectors:
            detector.load(data)

    def forget_tenant(self, tenant: str) -> None:
        """Drop everything learnt about a tenant (its partition moved to another worker after a rebalance)."""
        self.tally.forget(tenant)
        for detector in self.detectors:
            detector.forget(tenant)
        self.clearing.forget(tenant)

    def tracked(self) -> dict[str, int]:
        """Sizes of the internal tables (for metrics and the memory-bound tests)."""
        out = {"open_minutes": len(self.clock.open), "recent": len(self.clearing.recent)}
        for detector in self.detectors:
            out.update(detector.tracked())
        return out
