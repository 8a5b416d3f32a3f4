"""Prometheus metrics of one worker process, in its own registry (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = Counter("costplane_worker_events", "Valid usage events processed", ["role"], registry=r)
        self.unpriced = Counter("costplane_worker_unpriced_events", "Events of models without a price", registry=r)
        self.duplicates = Counter(
            "costplane_worker_duplicate_events", "Events skipped as duplicates in windows", registry=r
        )
        self.dead_letters = Counter("costplane_worker_dead_letters", "Records sent to the DLQ", ["reason"], registry=r)
        self.dlq_redelivered = Counter(
            "costplane_worker_dlq_redelivered",
            "Rejected items not dead-lettered again: their message was redelivered after "
            "its dead letters were flushed (the DLQ fence)",
            registry=r,
        )
        self.waiting = Gauge(
            "costplane_worker_waiting",
            "1 while a part of the worker waits for a service to "
            "come back (sink: ClickHouse or the broker's offset commit; stream: Redis)",
            ["part"],
            registry=r,
        )
        self.decisions = Counter(
            "costplane_worker_decisions", "Decisions, lifts and threshold notices", ["type"], registry=r
        )
        self.sink_batches = Counter("costplane_worker_sink_batches", "ClickHouse batches written", registry=r)
        self.sink_rows = Counter("costplane_worker_sink_rows", "Raw rows inserted into ClickHouse", registry=r)
        self.sink_retries = Counter("costplane_worker_sink_retries", "ClickHouse flushes retried", registry=r)
        self.sink_skipped = Counter(
            "costplane_worker_sink_skipped",
            "Records' items the sink did not write because they are invalid (the stream role dead-letters them)",
            ["role", "reason"],
            registry=r,
        )
        self.fail_opens = Counter(
            "costplane_worker_fail_opens", "Effects skipped because Redis failed (fail-open)", registry=r
        )
        self.window_retries = Counter(
            "costplane_worker_window_retries",
            "Window commits retried because Redis failed (the stream waits)",
            registry=r,
        )
        self.fenced = Counter(
            "costplane_worker_fenced_commits",
            "Tenant commits refused because another worker advanced the fence",
            registry=r,
        )
        self.alerts = Counter(
            "costplane_worker_alerts", "Alert lifecycle events published", ["kind", "action"], registry=r
        )
        self.alert_errors = Counter(
            "costplane_worker_alert_errors", "Alert evaluations or state writes that failed", ["stage"], registry=r
        )
        self.lag = Gauge("costplane_worker_consumer_lag", "Messages behind the log end", ["role"], registry=r)
        self.invalid_ratio = Gauge("costplane_worker_invalid_ratio", "Invalid share in the current window", registry=r)

        self.drift = _Drift()
        r.register(self.drift)

    def watch_recent_ids(self, held: Callable[[], Mapping[int, int]]) -> None:
        """Report the window-dedup ids held per partition, read when scraped (nothing to update per event)."""
        self.registry.register(
            _PerPartition("costplane_worker_recent_ids", "Event ids held per partition for window dedup", held)
        )


class _PerPartition(Collector):
    """A gauge per partition whose values are read from the worker's state at scrape time."""

    def __init__(self, name: str, documentation: str, read: Callable[[], Mapping[int, int]]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The name, without reading the worker's state: the registry then refuses a second of the same name."""
        yield GaugeMetricFamily(self._name, self._documentation, labels=["partition"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=["partition"])
        for partition, value in sorted(self._read().items()):
            family.add_metric([str(partition)], value)
        yield family


#: ``(tenant, budget, unit)`` → (Σ counter − ledger over the budget's members, members whose counter differs).
DriftSnapshot = Mapping[tuple[str, str, str], tuple[int, int]]


class _Drift(Collector):
    """Budget counters against the ledger, as last measured by the sink role (replaced whole, never accumulated).

    Exported per budget, not per member: a per-user budget has a member per user, too many series to keep.
    """

    def __init__(self) -> None:
        self._last: DriftSnapshot = {}

    def update(self, snapshot: DriftSnapshot) -> None:
        self._last = dict(snapshot)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "costplane_budget_drift",
            "Budget counter minus ledger, summed over members",
            labels=["tenant", "budget", "unit"],
        )
        yield GaugeMetricFamily(
            "costplane_budget_drift_members",
            "Members whose counter differs from the ledger",
            labels=["tenant", "budget"],
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        total = GaugeMetricFamily(
            "costplane_budget_drift",
            "Budget counter minus ledger, summed over members",
            labels=["tenant", "budget", "unit"],
        )
        members = GaugeMetricFamily(
            "costplane_budget_drift_members",
            "Members whose counter differs from the ledger",
            labels=["tenant", "budget"],
        )
        for (tenant, budget, unit), (drift, count) in sorted(self._last.items()):
            total.add_metric([tenant, budget, unit], drift)
            members.add_metric([tenant, budget], count)
        yield total
        yield members
