"""Bad input goes to the dead-letter topic with its reason and origin; the worker keeps going, until a flood of
invalid records (a bad deploy upstream) stops it on purpose with the documented message and exit status."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import pytest
import redis
from confluent_kafka import Producer

from costplane.config import KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.testing import usage_event
from costplane.streams.app import EXIT_INVALID_RATIO
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def event(tenant: str = "acme", **changes: object) -> UsageEvent:
    return usage_event(**{"tenant": tenant, "input_tokens": 10, "output_tokens": 5, "user_id": "u1", **changes})


def wrong_schema_bytes() -> bytes:
    schema = fastavro.parse_schema({"type": "record", "name": "Other", "fields": [{"name": "x", "type": "string"}]})
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, {"x": "hello, this is not a usage batch"})
    return buf.getvalue()


def dlq_records(env: dict[str, str]) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "costplane.cli", "dlq", "inspect", "--limit", "1000", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    records: list[dict[str, object]] = json.loads(done.stdout)
    return records


def test_bad_input_is_dead_lettered_and_a_flood_stops_the_worker(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, tmp_path: Path
) -> None:
    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=1))
    env = worker_env(
        kafka_settings,
        redis_settings,
        None,
        usage_partitions=1,
        invalid_min_events=200,
        invalid_ratio_limit=0.5,
        invalid_window_s=600,
        max_clock_skew_ms=60_000,
    )
    worker = WorkerProcess(env, tmp_path / "worker.log", role="stream").start()
    codec = UsageCodec.schemaless()
    producer = Producer(kafka_settings.confluent_config())
    topic = kafka_settings.topic("usage")

    def send(value: bytes, headers: list[tuple[str, bytes]], key: bytes = b"acme") -> None:
        producer.produce(topic, key=key, value=value, headers=list(headers))  # type: ignore[arg-type]

    try:
        worker.wait_ready(90)
        for _ in range(10):  # 500 valid events first, so the few bad ones keep the ratio low
            send(*codec.encode_batch("acme", [event() for _ in range(50)]))
        send(random.Random(7).randbytes(64), [])  # random bytes, no headers
        send(random.Random(8).randbytes(64), [("costplane-schema", b"UsageBatch"), ("costplane-schema-version", b"1")])
        send(wrong_schema_bytes(), [("costplane-schema", b"UsageBatch"), ("costplane-schema-version", b"1")])
        send(b"{}", [("costplane-schema", b"Invoice"), ("costplane-schema-version", b"1")])
        bad_batch = [
            event(),
            event(input_tokens=-5),
            event(occurred_at=int(time.time() * 1000) + 3_600_000),
            event(attempt=0),
        ]
        send(*codec.encode_batch("acme", bad_batch))
        send(*codec.encode_event(event(tenant="")))
        assert producer.flush(10) == 0

        deadline = time.monotonic() + 60
        records: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(records) < 8:
            records = dlq_records(env)
            time.sleep(0.5)
        assert len(records) == 8, [r["reason"] for r in records]
        by_offset = sorted(records, key=lambda r: (int(str(r["offset"])), str(r["reason"])))
        reasons = [str(r["reason"]) for r in by_offset]
        assert reasons[0] == "unknown_schema"  # random bytes without headers
        assert reasons[1] == "undecodable"  # random bytes claiming to be a UsageBatch
        assert reasons[2] in ("undecodable", "schema_mismatch", "empty_batch")  # another Avro schema's record
        assert reasons[3] == "unknown_schema"  # a schema the worker does not read
        assert sorted(reasons[4:7]) == ["bad_attempt", "clock_skew", "negative_tokens"]  # one batch, 3 of 4 bad
        assert reasons[7] == "missing_tenant"
        by_reason = {str(r["reason"]): r for r in records}
        assert by_reason["negative_tokens"]["topic"] == topic
        assert by_reason["negative_tokens"]["error_class"] == "validation"
        payload = by_reason["negative_tokens"]["payload"]
        assert isinstance(payload, dict) and payload["input_tokens"] == -5
        assert by_reason["unknown_schema"]["error_class"] == "decode"
        assert all(int(str(r["offset"])) >= 10 for r in records)  # the origin offsets of the bad messages
        assert worker.proc is not None and worker.proc.poll() is None, "the worker must keep going"
        status, metrics = worker.get("/metrics")
        assert status == 200 and 'costplane_worker_events_total{role="stream"} 501.0' in str(metrics)
        held = [line for line in str(metrics).splitlines() if line.startswith("costplane_worker_recent_ids{")]
        assert len(held) == 1 and held[0].endswith(" 501.0"), held  # acme's one partition holds every valid id

        # A bad deploy upstream: every event invalid. The worker must stop, saying why and which setting.
        for _ in range(20):
            send(*codec.encode_batch("acme", [event(input_tokens=-1) for _ in range(50)]))
        assert producer.flush(10) == 0
        code = worker.wait_exit(60)
        assert code == EXIT_INVALID_RATIO
        log = worker.log_tail()
        assert "COSTPLANE_WORKER_INVALID_RATIO_LIMIT=0.5" in log and "were invalid" in log

        # Replay after a fix: with a wider clock-skew bound the future-dated event is valid now, the rest is not.
        fixed = {**env, "COSTPLANE_WORKER_MAX_CLOCK_SKEW_MS": str(2 * 3_600_000)}
        done = subprocess.run(
            [sys.executable, "-m", "costplane.cli", "dlq", "replay", "--reason", "clock_skew", "--json"],
            env=fixed,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"replayed": 1, "still_invalid": 0, "dry_run": False}
    finally:
        worker.stop()
        redis.Redis.from_url(redis_settings.url.get_secret_value()).close()
