"""The Faust application of the stream role: decode → price → windows → decisions, with dead letters.

Agents stay short: the codec decodes (the one place), :mod:`costplane.streams.worker.windows` computes over the
pure core, and this module only moves bytes and effects. Messages are taken in batches (``take_events``) and each
window key is read and written once per batch. Spend windows live in Redis beside the guard's counters, fenced
by source offsets (:mod:`costplane.streams.worker.windowstore`); budgets are read from the compacted budgets topic
by every worker in full, because every partition needs every budget.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import faust
from redis.exceptions import RedisError

from costplane.budgets import Budget
from costplane.config import (
    AlertSettings,
    ClickHouseSettings,
    KafkaSettings,
    RedisSettings,
    WorkerSettings,
    load_settings,
)
from costplane.logging import get_logger
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.streams.dlq import InvalidRatioExceeded, InvalidRatioGuard, dead_letters
from costplane.streams.worker.alerts import RedisStateStore, WorkerAlerts
from costplane.streams.worker.api import RecentDecisions
from costplane.streams.worker.dedup import RecentIds
from costplane.streams.worker.dlqfence import DlqFence
from costplane.streams.worker.fetchwait import set_fetch_max_wait
from costplane.streams.worker.gctuning import collections_deferred
from costplane.streams.worker.metrics import WorkerMetrics
from costplane.streams.worker.pricing import price_events
from costplane.streams.worker.windows import Located, Pending, WorkerWindows

log = get_logger(__name__)

EXIT_INVALID_RATIO = 3
T = TypeVar("T")


class Runtime:
    """Everything the agents share: codec, catalog, budgets, windows, metrics. One per process."""

    def __init__(
        self,
        kafka: KafkaSettings,
        redis_settings: RedisSettings,
        worker: WorkerSettings,
        metrics: WorkerMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from costplane.pricing.catalog import default_catalog
        from costplane.streams.worker.connect import open_worker_redis

        self.kafka, self.worker, self.metrics, self.clock = kafka, worker, metrics, clock
        self.codec = (
            UsageCodec.with_registry(kafka.schema_registry_url)
            if kafka.schema_registry_url
            else UsageCodec.schemaless()
        )
        self.catalog = default_catalog()
        connected = open_worker_redis(redis_settings, group_id(kafka, worker))
        self.store = connected.store
        self.windows = WorkerWindows(
            connected.windows, connected.windows.keys, self.store.keys, cache_limit=worker.window_cache_keys
        )
        self.dlq_fence = DlqFence(connected.client, redis_settings.key_prefix, group_id(kafka, worker))
        self.budgets: dict[str, Budget] = {}
        self.budgets_loaded = asyncio.Event()
        self.recent = RecentIds(worker.recent_ids_per_partition)
        metrics.watch_recent_ids(self.recent.held)
        self.invalid = InvalidRatioGuard(worker.invalid_ratio_limit, worker.invalid_window_s, worker.invalid_min_events)
        self.ready = False
        self.waiting: str | None = None  # what the stream role waits for (Redis), for /readyz
        self.published_tenants: set[str] = set()
        self.recent_decisions = RecentDecisions()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)


def group_id(kafka: KafkaSettings, worker: WorkerSettings) -> str:
    return worker.group_id or f"{kafka.topic_prefix}.worker"


def create_app(
    kafka: KafkaSettings,
    redis_settings: RedisSettings,
    worker: WorkerSettings,
    clickhouse: ClickHouseSettings | None,
    metrics: WorkerMetrics,
    report: Callable[[str], Any] | None = None,
    sink_ready: Callable[[], bool] | None = None,
    alerts: AlertSettings | None = None,
    sink_waiting: Callable[[], str | None] | None = None,
) -> faust.App:
    """The Faust app with its agents, timers and web pages (``report`` serves ``/api/report`` when given)."""
    stream_role = worker.role in ("stream", "all")
    worker.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates its own folder in it, not the parents
    app = faust.App(
        group_id(kafka, worker),
        broker=[f"kafka://{h}" for h in kafka.bootstrap_servers.split(",")],
        store="memory://",
        # Faust writes a data folder even with memory tables; by default that is ``<group>-data`` in the current
        # directory, so a worker started anywhere would litter it.
        datadir=str(worker.data_dir / group_id(kafka, worker)).replace("{", "{{").replace("}", "}}"),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=True,
        web_bind=worker.web_host,
        web_host=worker.web_host,
        web_port=worker.web_port,
        topic_partitions=worker.usage_partitions,
        topic_replication_factor=worker.replication_factor,
        table_standby_replicas=0,
        broker_session_timeout=worker.session_timeout_s,
        broker_heartbeat_interval=max(worker.session_timeout_s / 10, 0.3),
        broker_rebalance_timeout=max(worker.session_timeout_s * 2, 5),
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        broker_commit_interval=1.0,
        web_in_thread=False,
        # The framework's own pages (router, tables, graph, stats, performance) expose internals: not served.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
    )
    rt = Runtime(kafka, redis_settings, worker, metrics) if stream_role else None

    if rt is not None:
        _stream_role(app, kafka, worker, rt, alerts or load_settings(AlertSettings))

    @app.page("/healthz")
    async def healthz(self: Any, request: Any) -> Any:
        return self.json({"status": "ok", "pid": os.getpid()})

    @app.page("/readyz")
    async def readyz(self: Any, request: Any) -> Any:
        waiting = {
            part: what
            for part, what in (
                ("stream", rt.waiting if rt is not None else None),
                ("sink", sink_waiting() if sink_waiting is not None else None),
            )
            if what is not None
        }
        ok = (rt is None or rt.ready) and (sink_ready is None or sink_ready()) and not waiting
        return self.json({"ready": ok, "waiting": waiting}, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics_page(self: Any, request: Any) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return self.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    _api_pages(app, redis_settings, worker, metrics, rt, report)

    @app.page("/api/report")
    async def report_page(self: Any, request: Any) -> Any:
        denied, query = _scoped(self, request, worker)
        if denied is not None:
            return denied
        if report is None:
            return self.json({"error": "this worker does not own ClickHouse (role stream)"}, status=404)
        try:
            rows = await asyncio.get_running_loop().run_in_executor(None, report, query)
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        return self.json(rows)

    return app


def _scoped(view: Any, request: Any, worker: WorkerSettings) -> tuple[Any | None, str]:
    """``(refusal, query string)``: a 401 (saying nothing about the data) without a valid token, a 403 when a
    tenant-scoped token asks for another tenant; else the query string to run, scoped to the token's tenant."""
    from costplane.streams.worker.access import check, scoped_query, tenant_tokens

    access = check(request.headers.get("Authorization"), worker, tenant_tokens(worker))
    if not access.allowed:
        return view.json({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"}), ""
    query = scoped_query(request.query_string, access.tenant)
    if query is None:
        return view.json({"error": "this token reads its own tenant only"}, status=403), ""
    return None, query


def _api_pages(
    app: faust.App,
    redis_settings: RedisSettings,
    worker: WorkerSettings,
    metrics: WorkerMetrics,
    rt: Runtime | None,
    report: Callable[[str], Any] | None,
) -> None:
    """``/api/budgets/status`` and ``/api/decisions/recent``, and the sink role's drift measurement."""
    from costplane.budget_status_redis import UnknownScope
    from costplane.enforcers.connect import open_client
    from costplane.enforcers.keys import KeyLayout
    from costplane.streams.worker.api import budget_status, measure_drift

    client = open_client(redis_settings, timeout_s=5)  # a RedisCluster with COSTPLANE_REDIS_CLUSTER
    keys = KeyLayout(redis_settings.key_prefix)

    @app.page("/api/budgets/status")
    async def budgets_status_page(self: Any, request: Any) -> Any:
        denied, query = _scoped(self, request, worker)
        if denied is not None:
            return denied
        try:
            rows = await asyncio.get_running_loop().run_in_executor(
                None, budget_status, client, keys, int(time.time() * 1000), query, report
            )
        except UnknownScope as exc:
            return self.json({"error": str(exc)}, status=404)
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        except RedisError as exc:
            return self.json({"error": f"redis: {exc}"}, status=503)
        return self.json(rows)

    @app.page("/api/decisions/recent")
    async def decisions_recent_page(self: Any, request: Any) -> Any:
        denied, query = _scoped(self, request, worker)
        if denied is not None:
            return denied
        if rt is None:
            return self.json({"error": "this worker does not run the stream role"}, status=404)
        try:
            return self.json(rt.recent_decisions.query(query))
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)

    if report is not None and worker.drift_check_s > 0:
        sink_report = report

        @app.timer(interval=worker.drift_check_s)  # type: ignore[untyped-decorator]
        async def measure_budget_drift() -> None:
            """Budget counters against the ledger, exported as ``costplane_budget_drift`` (see docs/operations.md)."""
            try:
                snapshot = await asyncio.get_running_loop().run_in_executor(
                    None, measure_drift, client, keys, int(time.time() * 1000), sink_report
                )
            except (RedisError, OSError, ValueError) as exc:
                log.warning("budget_drift_failed", error=str(exc))
                return
            metrics.drift.update(snapshot)


def _stream_role(
    app: faust.App, kafka: KafkaSettings, worker: WorkerSettings, rt: Runtime, alert_settings: AlertSettings
) -> None:
    usage_name = kafka.topic("usage")
    usage = app.topic(usage_name, value_serializer="raw", key_serializer="raw", partitions=worker.usage_partitions)
    dlq = app.topic(kafka.topic("usage.dlq"), value_serializer="raw", key_serializer="raw")
    decisions = app.topic(kafka.topic("decisions"), value_serializer="raw", key_serializer="raw")
    m = rt.metrics
    alerts = WorkerAlerts.for_app(
        app,
        kafka.topic("alerts"),
        kafka.topic("alerts.dlq"),
        alert_settings,
        clock=rt.clock,
        store=RedisStateStore(rt.store.client, rt.store.keys.prefix),
        metrics=m,
    )
    alerts.attach(app, usage_name)

    # One batch or re-evaluation at a time between computing windows and committing them: a timer's re-check
    # must not write a state computed before a batch whose commit is already on its way (and the other way round).
    window_lock = asyncio.Lock()

    async def until_redis_answers(step: Callable[[], T], decisions: int, commits: int) -> T:
        """Run a window step that reads or writes Redis; Redis down pauses the stream here, with backoff, instead
        of counting anything twice or not at all (and the outage is a fail-open alert)."""
        delay = 0.05
        while True:
            try:
                result = step()
            except RedisError as exc:
                rt.waiting = f"Redis: {exc}"
                m.waiting.labels("stream").set(1)
                m.window_retries.inc()
                alerts.windows_failed(rt.now_ms(), decisions=decisions, commits=commits)
                log.warning("window_commit_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                if rt.waiting is not None:
                    rt.waiting = None
                    m.waiting.labels("stream").set(0)
                return result

    async def count(located: list[Located]) -> Pending:
        """The batch's window writes, computed against what Redis holds (tenant fences and states not cached yet
        are read first); decision-free tenants' commits are already on their way to Redis."""

        def counted() -> Pending:
            with collections_deferred():  # the whole batch is alive until count returns: nothing to collect
                return rt.windows.count(located, list(rt.budgets.values()), rt.now_ms(), send_early=True)

        return await until_redis_answers(counted, 0, 0)

    async def write(pending: Pending) -> None:
        """Decision records first (flushed: at least once), then the windows' atomic commit (exactly once).

        A crash between the two republishes the records on redelivery under the same ``dedup_key``; the windows
        count once either way, because the commit carries the fence.
        """
        if pending.decisions:
            topic = decisions.get_topic_name()
            for d in pending.decisions:
                record = d.to_json()
                await app.producer.send(topic, d.tenant.encode(), record.encode(), None, None, None)
                m.decisions.labels(d.type).inc()
                rt.recent_decisions.add(record)
            await app.producer.flush()
        report = await until_redis_answers(
            lambda: rt.windows.commit(pending), len(pending.decisions), len(pending.commits)
        )
        alerts.outcome(pending.decisions, True if pending.commits else None, rt.now_ms(), commits=len(pending.commits))
        if report.fenced:
            m.fenced.inc(len(report.fenced))
            log.warning("window_commit_fenced", tenants=report.fenced)
            for partition in report.fenced_partitions:  # its events were not counted here: never "seen" either
                rt.recent.forget(partition)

    @app.agent(usage)
    async def process(stream: Any) -> None:
        async for events in stream.take_events(worker.batch_max_messages, within=worker.batch_within_s):
            await rt.budgets_loaded.wait()
            now_ms = rt.now_ms()
            located: list[Located] = []
            decoded_messages: list[tuple[Any, list[UsageEvent]]] = []
            valid = invalid = 0
            lettered: dict[int, int] = {}  # partition → last offset dead-lettered in this batch
            for n, event in enumerate(events):
                if n and n % 20 == 0:
                    await asyncio.sleep(0)  # keep the web server and heartbeats responsive under load
                msg = event.message
                headers = [(k, v) for k, v in (msg.headers or [])]
                decoded = rt.codec.decode(msg.value, headers, now_ms=now_ms, max_clock_skew_ms=worker.max_clock_skew_ms)
                if decoded.rejects:
                    invalid += len(decoded.rejects)
                    if await until_redis_answers(partial(rt.dlq_fence.done, msg.partition, msg.offset), 0, 0):
                        m.dlq_redelivered.inc(len(decoded.rejects))  # dead-lettered before this redelivery
                    else:
                        for dl in dead_letters(
                            decoded.rejects,
                            topic=msg.topic,
                            partition=msg.partition,
                            offset=msg.offset,
                            key=msg.key,
                            value=msg.value,
                            headers=headers,
                        ):
                            await dlq.send(key=dl.key, value=dl.value, headers=dl.headers)
                        lettered[msg.partition] = msg.offset
                        for rej in decoded.rejects:
                            m.dead_letters.labels(rej.reason).inc()
                        alerts.dead_lettered(decoded.rejects, msg.key, msg.partition, now_ms)
                if decoded.events:
                    decoded_messages.append((msg, decoded.events))
                    valid += len(decoded.events)
            firsts = rt.recent.keep_fresh([(msg.partition, evs) for msg, evs in decoded_messages])
            m.duplicates.inc(valid - sum(map(len, firsts)))
            for (msg, _), fresh in zip(decoded_messages, firsts, strict=True):
                for priced in price_events(rt.catalog, fresh):
                    if priced.unpriced:
                        m.unpriced.inc()
                    located.append(Located(priced, msg.partition, msg.offset))
            m.events.labels("stream").inc(valid)
            if lettered:  # flushed first, fenced second: a crash in between re-sends them once, same dlq-id
                await app.producer.flush()
                await until_redis_answers(partial(rt.dlq_fence.advance, lettered), 0, 0)
            if located:
                async with window_lock:
                    pending = await count(located)
                    m.duplicates.inc(pending.redelivered)
                    await write(pending)
                alerts.observe(located, now_ms)
            try:
                rt.invalid.observe(valid, invalid, rt.clock())
            except InvalidRatioExceeded as exc:
                m.invalid_ratio.set(rt.invalid.ratio)
                await app.producer.flush()
                log.error("invalid_ratio_exceeded", message=str(exc))
                sys.stderr.write(f"costplane worker: {exc}\n")
                sys.stderr.flush()
                os._exit(EXIT_INVALID_RATIO)
            m.invalid_ratio.set(rt.invalid.ratio)

    async def reevaluate_all(budget_ids: set[str] | None) -> None:
        async with window_lock:
            pending = await until_redis_answers(
                lambda: rt.windows.reevaluate(rt.budgets, budget_ids, rt.now_ms()), 0, 0
            )
            await write(pending)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        """Partitions may move: fences and cached windows are read from Redis again on next use."""
        rt.windows.forget_all()
        rt.dlq_fence.forget()
        for tp in revoked:
            rt.recent.forget(tp.partition)

    async def take_over() -> None:
        """Load the metas of the tenants on this worker's partitions, then re-check their standing decisions
        against the budgets in force (a budget changed while no worker held them is applied now)."""
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == usage_name}
        if set_fetch_max_wait(app.consumer, worker.fetch_max_wait_ms):
            log.info("stream_fetch_wait", ms=worker.fetch_max_wait_ms)
        else:
            log.warning(
                "stream_fetch_wait_not_applied",
                ms=worker.fetch_max_wait_ms,
                reason="the Faust consumer's aiokafka fetcher was not found; Faust's 1500 ms stays",
            )
        loaded = rt.windows.take_over(assigned)
        log.info("windows_taken_over", partitions=sorted(assigned), tenants=loaded)
        if rt.budgets_loaded.is_set():
            await reevaluate_all(set(rt.budgets) | rt.windows.standing_budgets())

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        await take_over()

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]
    async def rollover() -> None:
        """Lift decisions whose window ended (Redis expires them too; the lift record says so)."""
        if rt.budgets_loaded.is_set():
            await reevaluate_all(None)

    @app.task  # type: ignore[untyped-decorator]
    async def follow_budgets() -> None:
        """Read the compacted budgets topic from the start, forever; apply each change to current windows."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        topic = kafka.topic("budgets")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            while not parts:
                await asyncio.sleep(0.5)
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                changed: set[str] = set()
                for records in batch.values():
                    for rec in records:
                        budget_id = (rec.key or b"").decode()
                        if rec.value is None:
                            rt.budgets.pop(budget_id, None)
                        else:
                            try:
                                rt.budgets[budget_id] = Budget.from_json(rec.value)
                            except ValueError as exc:
                                log.error("budget_invalid", budget_id=budget_id, error=str(exc))
                                continue
                        changed.add(budget_id)
                if changed:
                    _publish_budgets_to_redis(rt)
                    alerts.set_budgets(rt.budgets.values())
                if not rt.budgets_loaded.is_set():
                    positions = {tp: await consumer.position(tp) for tp in tps}
                    if all(positions[tp] >= end[tp] for tp in tps):
                        rt.budgets_loaded.set()
                        rt.ready = True
                        log.info("budgets_loaded", count=len(rt.budgets))
                        await reevaluate_all(set(rt.budgets) | rt.windows.standing_budgets())
                elif changed:
                    await reevaluate_all(changed)
        finally:
            await consumer.stop()


def _publish_budgets_to_redis(rt: Runtime) -> None:
    """The in-app guard matches calls against the tenant's budget set in Redis (tenant-named budgets only)."""
    by_tenant: dict[str, list[Budget]] = {}
    for b in rt.budgets.values():
        tenant = b.scope.get("tenant", "*")
        if tenant != "*":
            by_tenant.setdefault(tenant, []).append(b)
    try:
        for tenant in rt.published_tenants - by_tenant.keys():  # the tenant's last budget was deleted
            rt.store.publish_budgets(tenant, [])
        for tenant, items in by_tenant.items():
            rt.store.publish_budgets(tenant, items)
        rt.published_tenants = set(by_tenant)
    except Exception as exc:  # noqa: BLE001 - Redis down: the guard keeps its cached set; counted as fail-open
        rt.metrics.fail_opens.inc()
        log.warning("publish_budgets_failed", error=str(exc))
