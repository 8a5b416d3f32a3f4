"""The stream worker's alerting: detectors and the worker's own conditions → alert lifecycles → the alerts topic
and HTTP delivery. One :class:`WorkerAlerts` per stream process; the Faust app calls a few narrow methods.

Hooks, none of which waits on the network:

* :meth:`WorkerAlerts.observe` — every priced batch (the detectors count it);
* :meth:`WorkerAlerts.dead_lettered` — every message that produced dead letters;
* :meth:`WorkerAlerts.outcome` — every committed budget outcome (thresholds, decisions, lifts) and whether its Redis
  effects were written (a failure is a fail-open);
* :meth:`WorkerAlerts.set_budgets` — every budgets-topic change;
* :meth:`WorkerAlerts.set_detector_settings` — every detectors-topic change (per-tenant thresholds);
* :meth:`WorkerAlerts.attach` — registers the evaluation loop, the detectors-topic follower, the rebalance handlers
  and the shutdown drain.

Two lifecycles, two clocks. Detector findings run through the alert service's lifecycle on **event time**: the
end of each judged minute. A replayed backlog is then judged, resolved and cooled down minute by minute as live
traffic was, and yields the same alert ids. The worker's own conditions (budget thresholds and blocks, dead-letter
floods, fail-opens) run through a second lifecycle on the **worker's clock**: a block or a Redis outage is now.
Both publish through the same service: topic first, then the delivery queues.

State per tenant. Baselines, open incidents and held budget conditions are saved per tenant to Redis every
``CHECKPOINT_MS`` and when partitions are revoked, and loaded (merged) the first time a tenant is seen. A
rebalance therefore hands a tenant's incidents to its new owner, which resolves them, and a restart skips the
detectors' warm-up; a tenant whose partition went elsewhere is forgotten here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import httpx

from costplane.budgets import Budget
from costplane.config import AlertSettings, KafkaSettings, load_settings
from costplane.logging import get_logger
from costplane.publisher.codec import Reject
from costplane.publisher.identifiers import tenant_tag
from costplane.streams.alerting.delivery import Target
from costplane.streams.alerting.lifecycle import AlertLifecycle, LifecycleConfig
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.alerting.service import AlertService, Publish
from costplane.streams.core.conditions import ALL_TENANTS, UNKNOWN_TENANT, ConditionConfig, WorkerConditions
from costplane.streams.core.spend import Decision
from costplane.streams.detectors import MINUTE_MS, Detectors
from costplane.streams.detectors.overrides import Resolved
from costplane.streams.worker.detector_settings import follow_detector_settings
from costplane.streams.worker.metrics import WorkerMetrics
from costplane.streams.worker.windows import Located

log = get_logger(__name__)

CHECKPOINT_MS = 30_000
SETTINGS_RETRY_S = 5.0  # after the detectors-topic follower failed, read the topic again from the start
MIN_TICK_GAP_S = 0.1  # evaluations woken by outcomes are at least this far apart (a burst of decisions is one)
STORE_RETRY_MS = 30_000  # after a failed state read or write, leave Redis alone this long
STATE_VERSION = 1


class StateStore(Protocol):
    """Where per-tenant alert state lives between processes (Redis in the worker, a dict in tests)."""

    def load(self, tenants: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def save(self, states: Mapping[str, dict[str, Any]], ttl_ms: int) -> None: ...


class RedisStateStore:
    """One JSON string per tenant, ``{prefix}:{tenant}:alerts:state``, expiring after ``ttl_ms`` without a save."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client, self.prefix = client, prefix

    def key(self, tenant: str) -> str:
        return f"{self.prefix}:{{{tenant_tag(tenant)}}}:alerts:state"

    def load(self, tenants: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not tenants:
            return {}
        values = self.client.mget([self.key(t) for t in tenants])
        out: dict[str, dict[str, Any]] = {}
        for tenant, raw in zip(tenants, values, strict=True):
            if raw is None:
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                log.warning("alert_state_unreadable", tenant=tenant)
                continue
            if isinstance(data, dict) and data.get("v") == STATE_VERSION:
                out[tenant] = data
        return out

    def save(self, states: Mapping[str, dict[str, Any]], ttl_ms: int) -> None:
        if not states:
            return
        pipe = self.client.pipeline(transaction=False)
        for tenant, state in states.items():
            pipe.set(self.key(tenant), json.dumps(state, separators=(",", ":")), px=ttl_ms)
        pipe.execute()


def conditions_config(settings: AlertSettings) -> ConditionConfig:
    return ConditionConfig(
        dead_letters_per_minute=settings.dead_letters_per_minute,
        dead_letter_window_ms=round(settings.dead_letter_window_s * 1000),
        fail_open_critical_ms=round(settings.fail_open_critical_s * 1000),
    )


def reject_tenant(rejects: Sequence[Reject], key: bytes | None) -> str:
    """Whose dead letters these are: the event's tenant when it was readable, else the message key (the tenant by
    contract), else ``unknown``."""
    for rej in rejects:
        tenant = (rej.event or {}).get("tenant")
        if isinstance(tenant, str) and tenant:
            return tenant[:200]
    if key:
        return key.decode("utf-8", errors="replace")[:200]
    return UNKNOWN_TENANT


class WorkerAlerts:
    """Detectors, the worker's own conditions and the alert service of one stream process."""

    def __init__(
        self,
        settings: AlertSettings,
        publish: Publish,
        publish_dead_letter: Publish,
        *,
        clock: Callable[[], float] = time.time,
        detectors: Detectors | None = None,
        store: StateStore | None = None,
        metrics: WorkerMetrics | None = None,
        targets: list[Target] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings, self.clock, self.store, self.metrics = settings, clock, store, metrics
        self.detectors = detectors or Detectors()
        self.conditions = WorkerConditions(conditions_config(settings))
        self.service = AlertService(settings, publish, publish_dead_letter, targets=targets, client=client)
        self.own = AlertLifecycle(LifecycleConfig.from_settings(settings))
        self._partition_of: dict[str, int] = {}  # tenants seen in traffic, and where
        self._known: set[str] = set()  # tenants whose saved state was loaded (or is about to be)
        self._to_load: set[str] = set()
        self._store_retry_at = 0
        self._next_checkpoint = 0
        self._started = False
        self._wake = asyncio.Event()  # an outcome worth alerting on: evaluate now rather than at the next interval

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- hooks -----------------------------------------------------------------------------------------------
    def observe(self, located: Sequence[Located], now_ms: int) -> None:
        """A priced batch: feed the detectors; note each tenant's partition and valid events."""
        per_tenant: Counter[str] = Counter()
        for item in located:
            tenant = item.priced.event.tenant
            per_tenant[tenant] += 1
            if tenant not in self._partition_of:
                self._seen(tenant, item.partition)
        for tenant, n in per_tenant.items():
            self.conditions.counted(tenant, n, now_ms)
        self.detectors.observe([item.priced for item in located])

    def dead_lettered(self, rejects: Sequence[Reject], key: bytes | None, partition: int, now_ms: int) -> None:
        """The rejects of one message (each became a dead letter)."""
        if not rejects:
            return
        # Not a tenant to keep state for: the key of an undecodable message may be anything (bounded in conditions).
        self.conditions.dead_lettered(reject_tenant(rejects, key), (r.reason for r in rejects), now_ms)

    def outcome(
        self, decisions: Sequence[Decision], effects_written: bool | None, now_ms: int, *, commits: int = 0
    ) -> None:
        """A committed batch's decision records, in order; ``effects_written`` is None when the batch wrote nothing
        to Redis, True when it did (which ends a fail-open).

        A tenant not seen before (a lift after a restart, before any of its traffic) has its saved state loaded
        first, so the lift finds the block the previous process held and resolves it.
        """
        records = [d.to_dict() for d in decisions]
        fresh = {str(r["tenant"]) for r in records} - self._known
        if fresh:
            for tenant in fresh:
                self._know(tenant)
            self._load_pending(now_ms)
        for record in records:  # in evaluation order: a changed budget lifts a key, then may decide it again
            if record["type"] == "lift":
                self.conditions.lifted(record, now_ms)
            elif record["type"] == "threshold":
                self.conditions.threshold_crossed(record)
            else:  # decision (block / degrade) or notify
                self.conditions.decided(record)
        if effects_written is not None:
            self.conditions.effects_written(
                effects_written,
                now_ms,
                counters=commits,
                decisions=sum(r["type"] in ("decision", "lift") for r in records),
            )
        if records or effects_written is False:
            self._wake.set()

    def windows_failed(self, now_ms: int, *, decisions: int, commits: int) -> None:
        """A batch's Redis commit failed: the stream waits and retries, enforcement runs on the guard's policy."""
        self.conditions.effects_written(False, now_ms, decisions=decisions, counters=commits)
        self._wake.set()

    def set_budgets(self, budgets: Iterable[Budget]) -> None:
        self.detectors.set_budgets(budgets)

    def set_detector_settings(self, resolved: Resolved) -> None:
        """The thresholds in force after a detectors-topic change: from the next judged minute on."""
        self.detectors.replace_configs(resolved.default, resolved.tenants)

    # -- the timer -------------------------------------------------------------------------------------------
    async def tick(self) -> list[AlertEvent]:
        """Evaluate: judged minutes through the event-time lifecycle, own conditions through the wall-clock one."""
        if not self._started:
            await self.service.start()
            self._started = True
        now = self.now_ms()
        self._load_pending(now)
        events: list[AlertEvent] = []
        for minute, findings in self.detectors.evaluate_minutes(now):
            events += self.service.observe(findings, minute + MINUTE_MS)
        events += self.service.emit(self.own.observe(self.conditions.findings(now), now))
        if self.metrics is not None:
            for e in events:
                self.metrics.alerts.labels(e.kind, e.action).inc()
        if now >= self._next_checkpoint:
            self.checkpoint(now)
        return events

    async def safe_tick(self) -> None:
        """:meth:`tick` for the Faust timer: a failure is logged and counted, and the worker keeps counting spend."""
        try:
            await self.tick()
        except Exception as exc:  # noqa: BLE001 - enforcement must not stop because alerting failed; counted
            if self.metrics is not None:
                self.metrics.alert_errors.labels("evaluate").inc()
            log.exception("alerts_evaluate_failed", error=f"{type(exc).__name__}: {exc}")

    async def run(self) -> None:
        """Evaluate every ``evaluate_interval_s``, and soon after an outcome that may start or end an incident
        (a decision, a lift, a threshold, a failed Redis write): those alerts then wait for no timer."""
        last = float("-inf")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.evaluate_interval_s)
            self._wake.clear()
            gap = MIN_TICK_GAP_S - (time.monotonic() - last)
            if gap > 0:
                await asyncio.sleep(gap)
            last = time.monotonic()
            await self.safe_tick()

    async def stop(self) -> None:
        """Save state, then drain delivery (what is left after the drain becomes dead letters)."""
        self.checkpoint(self.now_ms(), force=True)
        if self._started:
            await self.service.stop()
            self._started = False

    # -- rebalances and state ----------------------------------------------------------------------------------
    def partitions_revoked(self, partitions: set[int]) -> None:
        """Save the tenants' state, so whichever worker gets their partitions continues it (all known tenants:
        one pipeline, and a tenant known only from its budget outcomes has no partition on record)."""
        self._save(sorted(self._known), self.now_ms(), force=True)

    def partitions_assigned(self, partitions: set[int]) -> None:
        """Forget the tenants whose partition is no longer ours (a rebalance that gives it back keeps them)."""
        for tenant in [t for t, p in self._partition_of.items() if p not in partitions]:
            self.forget_tenant(tenant)

    def forget_tenant(self, tenant: str) -> None:
        self.detectors.forget_tenant(tenant)
        self.conditions.forget_tenant(tenant)
        self.service.lifecycle.forget_tenant(tenant)
        self.own.forget_tenant(tenant)
        self._partition_of.pop(tenant, None)
        self._known.discard(tenant)
        self._to_load.discard(tenant)

    def tenant_states(self, tenants: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What is saved per tenant: learnt baselines, both lifecycles' keys, held budget conditions (one pass)."""
        wanted = set(tenants)
        out: dict[str, dict[str, Any]] = {
            t: {"v": STATE_VERSION, "baselines": {}, "incidents": {}, "own": {}, "conditions": {}} for t in wanted
        }
        for name, rows in self.detectors.baselines().items():
            for row in rows:
                if row[0][0] in wanted:
                    out[row[0][0]]["baselines"].setdefault(name, []).append(row)
        for part, lifecycle in (("incidents", self.service.lifecycle), ("own", self.own)):
            for key, value in lifecycle.state().items():
                tenant = value["finding"]["tenant"]
                if tenant in wanted:
                    out[tenant][part][key] = value
        for tenant in wanted:
            out[tenant]["conditions"] = self.conditions.state(tenant)
        return out

    def load_tenant_state(self, data: Mapping[str, Any]) -> None:
        """Merge a saved state; what this process already learnt or tracks wins."""
        self.detectors.load_baselines(data.get("baselines") or {})
        self.service.lifecycle.load(dict(data.get("incidents") or {}))
        self.own.load(dict(data.get("own") or {}))
        self.conditions.load_state(data.get("conditions") or {})

    def checkpoint(self, now_ms: int, force: bool = False) -> None:
        self._next_checkpoint = now_ms + CHECKPOINT_MS
        self._save(sorted(self._known), now_ms, force=force)

    def _seen(self, tenant: str, partition: int) -> None:
        self._partition_of[tenant] = partition
        self._know(tenant)

    def _know(self, tenant: str) -> None:
        if tenant not in self._known and tenant != ALL_TENANTS:
            self._known.add(tenant)
            self._to_load.add(tenant)

    def _load_pending(self, now_ms: int) -> None:
        if self.store is None or not self._to_load or now_ms < self._store_retry_at:
            return
        tenants = sorted(self._to_load)
        try:
            states = self.store.load(tenants)
        except Exception as exc:  # noqa: BLE001 - Redis down: start from scratch for now, retry later; counted
            self._store_failed("load", exc, now_ms)
            return
        self._to_load.clear()
        for state in states.values():
            self.load_tenant_state(state)
        if states:
            log.info("alert_state_loaded", tenants=len(states))

    def _save(self, tenants: Sequence[str], now_ms: int, force: bool = False) -> None:
        if self.store is None or not tenants or (now_ms < self._store_retry_at and not force):
            return
        states = self.tenant_states(t for t in tenants if t not in self._to_load)
        try:
            self.store.save(states, round(self.settings.state_ttl_s * 1000))
        except Exception as exc:  # noqa: BLE001 - Redis down: the state is rebuilt from traffic; counted
            self._store_failed("save", exc, now_ms)

    def _store_failed(self, stage: str, exc: Exception, now_ms: int) -> None:
        self._store_retry_at = now_ms + STORE_RETRY_MS
        if self.metrics is not None:
            self.metrics.alert_errors.labels(f"state_{stage}").inc()
        log.warning("alert_state_failed", stage=stage, error=f"{type(exc).__name__}: {exc}"[:300])

    # -- Faust -------------------------------------------------------------------------------------------------
    def attach(self, app: Any, usage_topic: str, kafka: KafkaSettings | None = None) -> None:
        """Register the evaluation loop, the detectors-topic follower, the rebalance handlers and the shutdown drain
        on a Faust app. ``kafka`` locates the detectors topic (default: the settings of the environment, which
        are the worker's own)."""

        async def alerts_evaluate() -> None:
            await self.run()

        async def detector_settings() -> None:
            await self.follow_detector_settings(kafka or load_settings(KafkaSettings))

        app.task(alerts_evaluate)
        app.task(detector_settings)

        async def revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
            self.partitions_revoked({tp.partition for tp in revoked if tp.topic == usage_topic})

        async def assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
            self.partitions_assigned({tp.partition for tp in assigned if tp.topic == usage_topic})

        async def shutdown(sender: Any, **_: Any) -> None:
            await self.stop()

        app.on_partitions_revoked.connect(revoked)
        app.on_partitions_assigned.connect(assigned)
        app.on_before_shutdown.connect(shutdown)

    async def follow_detector_settings(self, kafka: KafkaSettings) -> None:
        """Follow the detectors topic for the worker's lifetime; a failure (Kafka unreachable) is logged and
        counted, and the topic is read again from the start (the thresholds in force stay meanwhile)."""
        while True:
            try:
                await follow_detector_settings(kafka, self.set_detector_settings)
            except Exception as exc:  # noqa: BLE001 - thresholds must not stop the worker; counted and retried
                if self.metrics is not None:
                    self.metrics.alert_errors.labels("detector_settings").inc()
                log.warning("detector_settings_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(SETTINGS_RETRY_S)

    @classmethod
    def for_app(
        cls,
        app: Any,
        alerts_topic: str,
        dlq_topic: str,
        settings: AlertSettings,
        *,
        clock: Callable[[], float],
        store: StateStore | None,
        metrics: WorkerMetrics,
    ) -> WorkerAlerts:
        """Publishing through the Faust app's producer buffer (``send_soon``: in order, never blocking)."""
        topics = {
            name: app.topic(name, value_serializer="raw", key_serializer="raw") for name in (alerts_topic, dlq_topic)
        }

        def publisher(name: str) -> Publish:
            def publish(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
                topics[name].send_soon(key=key, value=value, headers=headers)

            return publish

        return cls(settings, publisher(alerts_topic), publisher(dlq_topic), clock=clock, store=store, metrics=metrics)
