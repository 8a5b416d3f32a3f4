"""The worker rides through a broker SIGKILL and restart under publisher load, with exact ClickHouse totals.

Before: in 4 of 4 broker outages of 15–30 s the worker exited with status 4 ("the ClickHouse sink stopped: … Commit
failed: Waiting for coordinator" or UNKNOWN_MEMBER_ID). Runs its own broker (a private dev-stack Kafka on free
ports), so killing it disturbs no other test; Redis and chDB are real too.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from costplane.config import (
    ClickHouseSettings,
    DevStackSettings,
    KafkaSettings,
    PublisherSettings,
    RedisSettings,
    WorkerSettings,
    load_settings,
)
from costplane.devstack.stack import DevStack
from costplane.pricing.catalog import default_catalog
from costplane.publisher import UsagePublisher
from costplane.reports.options import ReportOptions
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env
from costplane.synthetic import generate

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse, pytest.mark.chaos, pytest.mark.slow]
EVENTS = 12_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[DevStack]:
    settings = load_settings(
        DevStackSettings,
        state_dir=tmp_path / "stack",
        kafka_port=_free_port(),
        kafka_controller_port=_free_port(),
        redis_port=_free_port(),
        kafka_heap="384m",
        kafka_partitions=3,
    )
    stack = DevStack(settings, load_settings(ClickHouseSettings, chdb_path=tmp_path / "ch"))
    stack.start_service("kafka")
    yield stack
    stack.stop_service("kafka")


def _totals(worker: WorkerProcess) -> dict[str, tuple[int, int]]:
    status, answer = worker.get("/api/report?" + ReportOptions.parse("spend", by=["tenant"]).to_query_string(), 30)
    assert status == 200, answer
    return {r["tenant"]: (int(r["attempts"]), int(r["cost_nanos"])) for r in answer["rows"]}


def test_broker_sigkill_and_restart_the_worker_rides_through(
    private_kafka: DevStack, redis_settings: RedisSettings, clickhouse_settings: ClickHouseSettings, tmp_path: Path
) -> None:
    kafka = load_settings(
        KafkaSettings, bootstrap_servers=private_kafka.kafka.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}"
    )
    create_topics(kafka, load_settings(WorkerSettings, usage_partitions=3))
    now = int(time.time() * 1000)
    events = list(generate(EVENTS, seed=23, start_ms=now - 600_000, rate_per_s=40.0))
    catalog = default_catalog()
    truth: dict[str, list[int]] = {}
    for ev in events:
        cell = truth.setdefault(ev.tenant, [0, 0])
        cell[0] += 1
        cell[1] += catalog.price_event(ev).cost_nanos

    ch = clickhouse_settings.model_copy(update={"chdb_path": tmp_path / "chdb"})
    # The sink holds what it read for up to 3 s: when the broker dies it has a batch whose offsets it must commit.
    env = worker_env(kafka, redis_settings, ch, usage_partitions=3, sink_max_events=100_000, sink_max_age_s=3.0)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    publisher = UsagePublisher(
        kafka,
        load_settings(
            PublisherSettings,
            spool_dir=tmp_path / "spool",
            delivery_timeout_ms=3000,
            probe_interval_s=0.5,
            close_timeout_s=60,
        ),
    )
    app_exceptions = 0

    def emit(lo: int, hi: int, pace_s: float = 0.0) -> None:
        nonlocal app_exceptions
        for i in range(lo, hi):
            try:
                publisher.emit(events[i])
            except Exception:  # noqa: BLE001 - counting is the point: the app must never see one
                app_exceptions += 1
            if pace_s and i % 200 == 0:
                time.sleep(pace_s)

    try:
        worker.wait_ready(120)
        emit(0, 4_000, pace_s=0.2)  # the worker is consuming, and the sink buffering, when the broker dies
        pid = private_kafka.kafka.process.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        emit(4_000, 8_000, pace_s=0.4)  # the app keeps emitting through the outage (spooled)
        time.sleep(8.0)  # a 15-25 s outage in all: longer than the worker's 6 s session timeout
        status, ready = worker.get("/readyz")
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
        private_kafka.start_service("kafka")
        emit(8_000, EVENTS)
        publisher.close()
        assert app_exceptions == 0

        deadline = time.monotonic() + 180
        totals = _totals(worker)
        while sum(v[0] for v in totals.values()) < EVENTS and time.monotonic() < deadline:
            assert worker.proc.poll() is None, worker.log_tail()
            time.sleep(1.0)
            totals = _totals(worker)
        time.sleep(3.0)  # anything arriving now would be a double count
        totals = _totals(worker)
        assert worker.proc.poll() is None, worker.log_tail()
        assert totals == {t: (c, n) for t, (c, n) in truth.items()}
        status, ready = worker.get("/readyz")
        assert status == 200 and ready == {"ready": True, "waiting": {}}
    finally:
        worker.stop()
