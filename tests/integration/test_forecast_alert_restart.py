"""The real stream worker's ``budget_forecast`` alert survives a restart of the worker.

A monthly budget of $400 on tenant acme (notify only). Event times are in October 2026 (31 days), so the worker
judges the backlog minute by minute on event time whatever day the test runs (the allowed clock skew is raised):

1. worker one: $10 a day on Oct 1–9 at 09:00 — projected ≈ $316, no alert; it stops, saving its state in Redis;
2. worker two: $200 on Oct 10 at 09:00 — with the nine saved days the month so far is $290 and the projection
   $506.24 (rate $10 a day, 899/1440 of Oct 10 and 21 days ahead), crossing $400 on Oct 21: one trigger carrying
   those numbers. A worker that had restarted from zero would have seen $200 and a rate guessed from one morning.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer

from costplane.config import KafkaSettings, PublisherSettings, RedisSettings, WorkerSettings, load_settings
from costplane.publisher.event import UsageEvent
from costplane.publisher.publisher import UsagePublisher
from costplane.streams.alerting.codec import decode_alert
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

OCT1 = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp() * 1000)
DAY = 86_400_000
HOUR = 3_600_000
USD = 10**9
TEN_YEARS_MS = 10 * 366 * DAY


@pytest.fixture
def start_worker(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, tmp_path: Path
) -> Iterator[Callable[[], tuple[WorkerProcess, dict[str, str]]]]:
    started: list[WorkerProcess] = []
    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=1))

    def start() -> tuple[WorkerProcess, dict[str, str]]:
        env = worker_env(kafka_settings, redis_settings, None, usage_partitions=1, max_clock_skew_ms=TEN_YEARS_MS)
        worker = WorkerProcess(env, tmp_path / f"worker{len(started)}.log", role="stream").start()
        started.append(worker)
        worker.wait_ready(90)
        return worker, env

    yield start
    for worker in started:
        worker.stop()


def ten_dollars(at_ms: int) -> UsageEvent:
    """1 000 000 gpt-4o output tokens at $10 per million (the shipped catalog): $10."""
    return UsageEvent(
        event_id=str(uuid.uuid4()),
        occurred_at=at_ms,
        tenant="acme",
        provider="openai",
        model="gpt-4o",
        request_id=str(uuid.uuid4()),
        attempt=1,
        status="ok",
        output_tokens=1_000_000,
    )


def publish(kafka: KafkaSettings, spool: Path, events: list[UsageEvent]) -> None:
    publisher = UsagePublisher(kafka, load_settings(PublisherSettings, spool_dir=spool))
    try:
        assert all(publisher.emit(e) for e in events)
        assert publisher.flush(30) == 0
    finally:
        publisher.close()


def forecast_alerts(consumer: Consumer, seen: list[AlertEvent], timeout_s: float) -> list[AlertEvent]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for msg in consumer.consume(50, timeout=0.5):
            if not msg.error():
                seen.append(decode_alert(msg.value(), msg.headers()))
        if any(a.kind == "budget_forecast" for a in seen):
            break
    return [a for a in seen if a.kind == "budget_forecast"]


def test_forecast_alert_continues_the_month_after_a_restart(
    start_worker: Callable[[], tuple[WorkerProcess, dict[str, str]]],
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    tmp_path: Path,
) -> None:
    worker, env = start_worker()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "costplane.cli",
            "budget",
            "set",
            "acme-month",
            "--scope",
            "tenant=acme",
            "--period",
            "month",
            "--limit-usd",
            "400",
            "--action",
            "notify",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    consumer = Consumer(
        {**kafka_settings.confluent_config(), "group.id": f"t-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([kafka_settings.topic("alerts")])
    seen: list[AlertEvent] = []
    try:
        publish(kafka_settings, tmp_path / "spool1", [ten_dollars(OCT1 + d * DAY + 9 * HOUR) for d in range(9)])
        client = redis.Redis.from_url(redis_settings.url.get_secret_value())
        state_key = f"{redis_settings.key_prefix}:{{acme}}:alerts:state"

        def saved_days() -> dict[str, int]:
            state: dict[str, Any] = json.loads(client.get(state_key) or b"{}")
            months = state.get("baselines", {}).get("months", [])
            return dict(months[0][1]) if months else {}

        deadline = time.monotonic() + 90
        while sum(saved_days().values()) < 90 * USD and time.monotonic() < deadline:
            time.sleep(1)  # the worker saves its state every 30 s
        assert worker.stop() == 0
        assert saved_days() == {str(OCT1 + d * DAY): 10 * USD for d in range(9)}, worker.log_tail()
        assert forecast_alerts(consumer, seen, 3) == []  # ≈ $316 of $400: nothing yet

        worker, env = start_worker()
        oct10 = OCT1 + 9 * DAY + 9 * HOUR
        publish(kafka_settings, tmp_path / "spool2", [ten_dollars(oct10 + i) for i in range(20)])
        alerts = forecast_alerts(consumer, seen, 90)
        assert [(a.kind, a.action) for a in alerts][:1] == [("budget_forecast", "trigger")], worker.log_tail()
        numbers = alerts[0].numbers
        assert numbers["spent"] == str(290 * USD)
        assert numbers["projected"] == "506243055556"  # 290 + 10 × 899/1440 + 21 × 10, half-even
        assert numbers["basis"] == "recent_days"
        assert numbers["crossing_date"] == "2026-10-21"
        assert alerts[0].subject == {"tenant": "acme", "budget_id": "acme-month", "member": "tenant=acme"}
    finally:
        consumer.close()
