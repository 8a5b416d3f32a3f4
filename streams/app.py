"""The Faust application of the worker: the stream role's pipeline, the web pages, and the shared runtime.

The stream role's work is :mod:`costplane.streams.pipeline` (decode → dedup → price → windows → commit → effects,
one module per step); this module builds its steps from the :class:`Runtime` and hands them to the Faust adapter,
which alone knows Faust. Spend windows live in Redis beside the guard's counters, fenced by source offsets
(:mod:`costplane.streams.worker.windowstore`); budgets are read from the compacted budgets topic by every worker in
full, because every partition needs every budget.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import faust

from costplane.budgets import Budget
from costplane.config import (
    AlertSettings,
    ClickHouseSettings,
    KafkaSettings,
    RedisSettings,
    WorkerSettings,
    load_settings,
)
from costplane.enforcers.store import REDIS_ERRORS
from costplane.logging import get_logger
from costplane.publisher.codec import UsageCodec
from costplane.streams.dlq import InvalidRatioGuard
from costplane.streams.pipeline.budgets import BudgetFollower
from costplane.streams.pipeline.commit import CommitStep
from costplane.streams.pipeline.decode import DecodeStep
from costplane.streams.pipeline.effects import Effects
from costplane.streams.pipeline.fatal import EXIT_INVALID_RATIO, FatalLatch
from costplane.streams.pipeline.faust_adapter import FaustOutbox, wire_stream_role
from costplane.streams.pipeline.redis_io import RedisCalls
from costplane.streams.pipeline.reevaluate import Reevaluation
from costplane.streams.pipeline.stream import StreamPipeline
from costplane.streams.pipeline.windows import WindowsStep
from costplane.streams.worker.alerts import RedisStateStore, WorkerAlerts
from costplane.streams.worker.api import RecentDecisions
from costplane.streams.worker.dedup import RecentIds
from costplane.streams.worker.dlqfence import DlqFence
from costplane.streams.worker.metrics import WorkerMetrics
from costplane.streams.worker.windows import WorkerWindows

log = get_logger(__name__)

__all__ = ["EXIT_INVALID_RATIO", "Runtime", "create_app", "group_id"]


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
    fatal: FatalLatch | None = None,
) -> faust.App:
    """The Faust app with its agents, timers and web pages (``report`` serves ``/api/report`` when given).

    ``fatal`` records why the stream role stopped the process on purpose, for the entry point's exit status."""
    stream_role = worker.role in ("stream", "all")
    # Faust's consumer joins the group named by the app's id even without agents: a sink-only process (whose
    # Faust app serves only the web pages) gets an id of its own, so starting or stopping it never rebalances the
    # stream workers.
    app_id = group_id(kafka, worker) if stream_role else f"{group_id(kafka, worker)}.sink.web"
    worker.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates its own folder in it, not the parents
    app = faust.App(
        app_id,
        broker=[f"kafka://{h}" for h in kafka.bootstrap_servers.split(",")],
        store="memory://",
        # Faust writes a data folder even with memory tables; by default that is ``<group>-data`` in the current
        # directory, so a worker started anywhere would litter it.
        datadir=str(worker.data_dir / app_id).replace("{", "{{").replace("}", "}}"),
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
        _stream_role(app, kafka, worker, rt, alerts or load_settings(AlertSettings), fatal or FatalLatch())

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
        except REDIS_ERRORS as exc:
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
            except REDIS_ERRORS + (OSError, ValueError) as exc:
                log.warning("budget_drift_failed", error=str(exc))
                return
            metrics.drift.update(snapshot)


def _stream_role(
    app: faust.App,
    kafka: KafkaSettings,
    worker: WorkerSettings,
    rt: Runtime,
    alert_settings: AlertSettings,
    fatal: FatalLatch,
) -> None:
    """Build the stream role's steps and hand them to the Faust adapter (see :mod:`costplane.streams.pipeline`)."""
    alerts = WorkerAlerts.for_app(
        app,
        kafka.topic("alerts"),
        kafka.topic("alerts.dlq"),
        alert_settings,
        clock=rt.clock,
        store=RedisStateStore(rt.store.client, rt.store.keys.prefix),
        metrics=rt.metrics,
    )
    alerts.attach(app, kafka.topic("usage"), kafka=kafka)
    redis, outbox = RedisCalls(rt, alerts), FaustOutbox(app)
    windows = WindowsStep(rt, redis)
    commit = CommitStep(rt, redis, outbox, kafka.topic("decisions"))
    effects = Effects(rt, alerts)
    reevaluation = Reevaluation(rt, redis, windows, commit, effects)
    decode = DecodeStep(rt, redis, outbox, kafka.topic("usage.dlq"), alerts)
    pipeline = StreamPipeline(rt.budgets_loaded, decode, rt.recent, rt.catalog, windows, commit, effects, rt.metrics)
    budgets = BudgetFollower(rt, redis, alerts, reevaluation)
    wire_stream_role(app, kafka, worker, pipeline, reevaluation, budgets, outbox, fatal)
