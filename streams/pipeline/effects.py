"""Step 6: what follows a batch once its windows are committed: recent decisions, alerts, metrics, and the stop on
a flood of invalid records.

Kept apart from the commit so that the steps before it only compute and write, and everything observable by an
operator (``/api/decisions/recent``, alerts, ``/metrics``) is decided here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from costplane.logging import get_logger
from costplane.streams.dlq import InvalidRatioExceeded
from costplane.streams.pipeline.commit import Committed
from costplane.streams.pipeline.decode import Decoded
from costplane.streams.pipeline.fatal import InvalidRatioStop
from costplane.streams.worker.windows import Located

if TYPE_CHECKING:
    from costplane.streams.app import Runtime
    from costplane.streams.worker.alerts import WorkerAlerts

log = get_logger(__name__)


class Effects:
    """The observable results of committed windows and of each batch."""

    def __init__(self, rt: Runtime, alerts: WorkerAlerts) -> None:
        self.rt, self.alerts = rt, alerts

    def committed(self, done: Committed) -> None:
        """Decisions into the recent list and metrics, the outcome alert state, and fenced tenants' partitions
        forgotten (their events were not counted here, so they were never "seen" either)."""
        rt, pending = self.rt, done.pending
        for decision, record in zip(pending.decisions, done.records, strict=True):
            rt.metrics.decisions.labels(decision.type).inc()
            rt.recent_decisions.add(record)
        self.alerts.outcome(
            pending.decisions, True if pending.commits else None, rt.now_ms(), commits=len(pending.commits)
        )
        if done.report.fenced:
            rt.metrics.fenced.inc(len(done.report.fenced))
            log.warning("window_commit_fenced", tenants=done.report.fenced)
            for partition in done.report.fenced_partitions:
                rt.recent.forget(partition)

    def batch_done(self, decoded: Decoded, located: list[Located]) -> None:
        """Events counted, detectors fed, and the invalid ratio checked: raises :class:`InvalidRatioStop` when
        invalid records flood in (a bad deploy upstream), so the worker stops instead of counting through it."""
        rt = self.rt
        rt.metrics.events.labels("stream").inc(decoded.valid)
        if located:
            self.alerts.observe(located, decoded.now_ms)
        try:
            rt.invalid.observe(decoded.valid, decoded.invalid, rt.clock())
        except InvalidRatioExceeded as exc:
            log.error("invalid_ratio_exceeded", message=str(exc))
            raise InvalidRatioStop(str(exc)) from exc
        finally:
            rt.metrics.invalid_ratio.set(rt.invalid.ratio)
