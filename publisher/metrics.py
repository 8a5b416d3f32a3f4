"""Publisher counters: exposed through prometheus-client, and as a plain snapshot for apps without Prometheus.

Each publisher gets its own ``CollectorRegistry`` unless the app passes one (e.g. ``prometheus_client.REGISTRY``)
so two publishers in one process, or a test suite, never collide on metric names.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge

from costplane.logging import get_logger

log = get_logger("costplane.publisher")


class PublisherMetrics:
    """The publisher's counters; every error path increments one, none of them raises."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.emitted = Counter("costplane_publisher_events_total", "Events accepted by emit()", registry=r)
        self.invalid = Counter(
            "costplane_publisher_invalid_events_total", "Events refused by validation", ["reason"], registry=r
        )
        self.errors = Counter(
            "costplane_publisher_errors_total", "Internal errors swallowed in lenient mode", ["kind"], registry=r
        )
        self.batches = Counter("costplane_publisher_batches_total", "Batches handed to the Kafka client", registry=r)
        self.delivered = Counter(
            "costplane_publisher_delivered_events_total", "Events acknowledged by the broker", registry=r
        )
        self.spooled = Counter(
            "costplane_publisher_spooled_batches_total", "Batches written to the local spool", registry=r
        )
        self.replayed = Counter(
            "costplane_publisher_replayed_batches_total", "Spooled batches delivered later", registry=r
        )
        self.lost = Counter(
            "costplane_publisher_lost_batches_total", "Batches the spool could not keep", ["reason"], registry=r
        )
        self.overflow = Counter(
            "costplane_publisher_overflow_batches_total",
            "Batches the emitting thread moved out of memory itself (memory bound reached)",
            registry=r,
        )
        self.unrecognised_usage = Counter(
            "costplane_publisher_unrecognised_usage_total",
            "Usage objects of an unknown shape (their events carry offline-counted, estimated tokens)",
            ["shape"],
            registry=r,
        )
        self.buffered = Gauge("costplane_publisher_buffered_events", "Events waiting in memory", registry=r)


class RateLimitedLog:
    """Log a repeated problem at most once per interval per key, with how many were suppressed."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, event: str, **fields: object) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (0.0, 0))
            if now - last < self.interval_s:
                self._last[key] = (last, suppressed + 1)
                return
            self._last[key] = (now, 0)
        log.warning(event, suppressed=suppressed, **fields)


class ClientLogger:
    """Receives librdkafka's log lines (through the client's ``logger`` option) and rate-limits them.

    Without it the client writes a line to stderr every reconnect attempt — many per second while the broker is
    down — into the app's own output. Here each (level, facility) logs at most once per interval, with a count.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        self._limited = RateLimitedLog(interval_s)

    def log(self, level: int, fmt: str, *args: object) -> None:
        message = fmt % args if args else fmt
        facility = args[0] if args else ""
        self._limited.warning(f"client:{level}:{facility}", "kafka client", level=level, message=message)
