"""Old events lose no ClickHouse row: a replay of week-old data and a sink more than a day behind.

Before, the stream role and the sink each judged an event's time against their own clock: an event more than
``max_clock_skew_ms`` (24 h) from the reader's clock was dead-lettered by the stream and silently dropped by the sink,
so a sink a day behind, or a replay of older data, lost rows the budgets had counted. Now both judge the event
against its Kafka record's timestamp and only the future is bounded: the records below (timestamps a week and two
days old, and an 8-day-old event produced now) must all reach ClickHouse, with exact counts and nano-USD, while the
one event dated two days after its record is dead-lettered by the stream and skipped, counted, by the sink.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from test_rerate import catalog_document, cost

from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse]

DAY = 86_400_000


def event(i: int, occurred_at: int, tenant: str) -> UsageEvent:
    return UsageEvent(
        event_id=str(uuid.uuid4()),
        occurred_at=occurred_at,
        tenant=tenant,
        provider="acme-ai",
        model="alpha" if i % 3 else "beta",
        request_id=f"r{i}",
        attempt=1,
        status="ok",
        input_tokens=100 + i,
        cached_input_tokens=i % 7,
        output_tokens=10 + i % 5,
        user_id=f"u{i % 4}",
    )


def cli(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "costplane.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def test_week_old_replays_and_a_lagging_sink_lose_no_row(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, tmp_path: Path
) -> None:
    (tmp_path / "A.json").write_text(json.dumps(catalog_document("A")))
    clickhouse = load_settings(ClickHouseSettings, chdb_path=tmp_path / "chdb", database=f"t{uuid.uuid4().hex[:10]}")
    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=2))
    env = worker_env(kafka_settings, redis_settings, clickhouse, usage_partitions=2, sink_max_age_s=0.5)
    env["COSTPLANE_PRICING_CATALOG"] = str(tmp_path / "A.json")
    now = int(time.time() * 1000)
    # (record timestamp, events): a replay of week-old data with its original timestamps, what a sink two days
    # behind reads, and 8-day-old events produced just now; all valid. Then one event from a clock 2 days ahead.
    week, lag = now - 7 * DAY, now - 2 * DAY
    valid: list[tuple[int, list[UsageEvent]]] = []
    for n, (stamp, dated) in enumerate(((week, week - 3_600_000), (lag, lag - 60_000), (now, now - 8 * DAY))):
        for b in range(4):
            base = 100 * n + 10 * b
            valid.append((stamp, [event(base + k, dated + k, ("acme", "globex")[b % 2]) for k in range(10)]))
    future = event(999, lag + 2 * DAY + 60_000, "acme")
    codec = UsageCodec.schemaless()
    producer = Producer(kafka_settings.confluent_config())
    topic = kafka_settings.topic("usage")
    for stamp, batch in [*valid, (lag, [future])]:
        value, headers = codec.encode_batch(batch[0].tenant, batch)
        producer.produce(topic, key=batch[0].tenant.encode(), value=value, headers=headers, timestamp=stamp)  # type: ignore[arg-type]
    assert producer.flush(10) == 0
    everything = [e for _, batch in valid for e in batch]

    worker = WorkerProcess(env, tmp_path / "worker.log", role="all").start()
    try:
        worker.wait_ready(90)
        since, until = day(now - 9 * DAY), day(now + 3 * DAY)

        def rows() -> list[dict[str, Any]]:
            args = ("report", "spend", "--by", "tenant,model", "--since", since, "--until", until, "--format", "json")
            out: list[dict[str, Any]] = cli(env, *args)
            return out

        deadline = time.monotonic() + 120
        while sum(r["attempts"] for r in rows()) < len(everything) and time.monotonic() < deadline:
            time.sleep(1)
        got = {(r["tenant"], r["model"]): (r["attempts"], r["cost_nanos"]) for r in rows()}
        want: dict[tuple[str, str], tuple[int, int]] = {}
        for e in everything:
            n, c = want.get((e.tenant, e.model), (0, 0))
            want[(e.tenant, e.model)] = (n + 1, c + cost(e, "A"))
        assert got == want, worker.log_tail()

        deadline = time.monotonic() + 30  # the sink reads the last record (the future-dated one) after the rest
        text = ""
        while "costplane_worker_sink_skipped_total{" not in text and time.monotonic() < deadline:
            time.sleep(0.5)
            text = str(worker.get("/metrics")[1])
        assert 'costplane_worker_dead_letters_total{reason="clock_skew"} 1.0' in text  # the stream's decision …
        skipped = [line for line in text.splitlines() if line.startswith("costplane_worker_sink_skipped_total{")]
        assert skipped == ['costplane_worker_sink_skipped_total{reason="clock_skew",role="sink"} 1.0'], skipped
        assert f'costplane_worker_events_total{{role="stream"}} {float(len(everything))}' in text
        assert f'costplane_worker_events_total{{role="sink"}} {float(len(everything))}' in text
        records = cli(env, "dlq", "inspect", "--json")
        assert [(r["reason"], r["payload"]["event_id"]) for r in records] == [("clock_skew", future.event_id)]
    finally:
        worker.stop()
