"""``costplane import`` of 60-day-old history: in the report on those days, once after two imports, priced at
its own time, and never in a live budget window (the live event beside it is counted there, exactly)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from costplane.config import (
    ClickHouseSettings,
    KafkaSettings,
    PublisherSettings,
    RedisSettings,
    WorkerSettings,
    load_settings,
)
from costplane.pricing.catalog import default_catalog
from costplane.publisher import UsagePublisher
from costplane.publisher.event import UsageEvent
from costplane.reports.options import ReportOptions
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse, pytest.mark.slow]

DAY_MS = 86_400_000


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costplane.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _history(now_ms: int) -> list[dict[str, Any]]:
    """Five events on two days 60 and 59 days ago, and one an hour ago (recent enough for a live window)."""
    d60 = now_ms - 60 * DAY_MS
    d59 = now_ms - 59 * DAY_MS
    rows = [(d60 + i * 1000, "gpt-4o-mini", 1000 + i, 100 * i) for i in range(3)]
    rows += [(d59 + i * 1000, "gpt-4o", 2000 + i, 50) for i in range(2)]
    rows += [(now_ms - 3_600_000, "gpt-4o-mini", 777, 7)]
    return [
        {
            "occurred_at": at,
            "tenant": "hist",
            "provider": "openai",
            "model": model,
            "input_tokens": inp,
            "output_tokens": out,
            "feature": "import",
        }
        for at, model, inp, out in rows
    ]


def _spent(client: redis.Redis, prefix: str) -> int:
    total = 0
    for key in client.scan_iter(f"{prefix}:{{hist}}:spent:*"):
        total += sum(int(v) for k, v in client.hgetall(key).items() if k.decode().isdigit())
    return total


def test_history_reaches_the_report_once_and_no_window(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    clickhouse_settings: ClickHouseSettings,
    tmp_path: Path,
) -> None:
    create_topics(kafka_settings, load_settings(WorkerSettings, usage_partitions=1))
    ch = clickhouse_settings.model_copy(update={"chdb_path": tmp_path / "chdb"})
    env = worker_env(kafka_settings, redis_settings, ch, sink_max_age_s=0.2)
    assert (
        cli(
            env, "budget", "set", "hist-day", "--scope", "tenant=hist", "--period", "day", "--limit-tokens", "100000000"
        ).returncode
        == 0
    )
    now_ms = int(time.time() * 1000)
    rows = _history(now_ms)
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "this line is not JSON\n")
    client = redis.Redis.from_url(redis_settings.url.get_secret_value())
    worker = WorkerProcess(env, tmp_path / "worker.log", role="all").start()
    try:
        worker.wait_ready(90)
        # A live event: the stream role counts it into the day window (so the window is live and watched).
        publisher = UsagePublisher(kafka_settings, load_settings(PublisherSettings, spool_dir=tmp_path / "spool"))
        publisher.record(tenant="hist", provider="openai", model="gpt-4o-mini", input_tokens=40, output_tokens=2)
        assert publisher.flush(30) == 0
        publisher.close()
        for _ in range(2):  # the second import must add nothing
            done = cli(env, "import", str(path), "--json")
            assert done.returncode == 1, done.stderr  # one line rejected, the rest sent
            summary = json.loads(done.stdout)
            assert (summary["events"], summary["sent"], summary["failed"]) == (6, 6, 0)
            assert [r["line"] for r in summary["rejected"]] == [7]

        catalog = default_catalog()
        expected: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for r in rows:
            day = datetime.fromtimestamp(r["occurred_at"] / 1000, tz=UTC).date().isoformat()
            event = UsageEvent(event_id="x", request_id="x", attempt=1, status="ok", **r)
            cell = expected[day]
            cell[0] += 1
            cell[1] += r["input_tokens"]
            cell[2] += catalog.price_event(event).cost_nanos
        today = datetime.fromtimestamp(now_ms / 1000, tz=UTC).date().isoformat()
        expected[today][0] += 1  # the live event
        expected[today][1] += 40
        expected[today][2] += catalog.price_event(
            UsageEvent(
                event_id="x",
                request_id="x",
                attempt=1,
                status="ok",
                occurred_at=now_ms,
                tenant="hist",
                provider="openai",
                model="gpt-4o-mini",
                input_tokens=40,
                output_tokens=2,
            )
        ).cost_nanos

        spec = ReportOptions.parse("spend", by=["day"], since="90d", tenant="hist").to_query_string()
        got: dict[str, list[int]] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, report = worker.get("/api/report?" + spec, 30)
            assert status == 200, report
            got = {r["day"]: [int(r["attempts"]), int(r["input_tokens"]), int(r["cost_nanos"])] for r in report["rows"]}
            if sum(v[0] for v in got.values()) >= 7:
                time.sleep(2.0)  # a second copy arriving late would show up now
                status, report = worker.get("/api/report?" + spec, 30)
                got = {
                    r["day"]: [int(r["attempts"]), int(r["input_tokens"]), int(r["cost_nanos"])] for r in report["rows"]
                }
                break
            time.sleep(0.5)
        assert got == dict(expected), worker.log_tail()
        # `costplane report spend` (answered by the worker that owns the embedded ClickHouse) says the same.
        since = datetime.fromtimestamp((now_ms - 61 * DAY_MS) / 1000, tz=UTC).date().isoformat()
        done = cli(env, "report", "spend", "--by", "day", "--tenant", "hist", "--since", since, "--format", "json")
        assert done.returncode == 0, done.stderr
        assert {r["day"]: [r["attempts"], r["input_tokens"], r["cost_nanos"]] for r in json.loads(done.stdout)} == dict(
            expected
        )
        # Only the live event is in the budget window: 42 tokens, not the 784 of the recent imported one too.
        assert _spent(client, redis_settings.key_prefix) == 42
    finally:
        worker.stop()
        for key in client.scan_iter(f"{redis_settings.key_prefix}:*", count=10_000):
            client.delete(key)
        client.close()
