"""``costplane rerate`` while the worker runs: through the worker that owns embedded chDB, with events streaming in.

The worker prices with catalog A (``COSTPLANE_PRICING_CATALOG``); the re-rate applies catalog B to Oct 31 – Nov 1
2026 while 200 more events (Oct 15 and Nov 20: outside the re-rated days, inside the very partitions being swapped)
arrive. Afterwards every event is there exactly once: the re-rated days at B, everything else at A. Unit prices and
the event shapes are those of ``test_rerate``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_rerate import PRICES, catalog_document, cost, events

from costplane.config import (
    ClickHouseSettings,
    KafkaSettings,
    PublisherSettings,
    RedisSettings,
    WorkerSettings,
    load_settings,
)
from costplane.publisher.event import UsageEvent
from costplane.publisher.publisher import UsagePublisher
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

DAY = 86_400_000
OCT15 = 1_792_022_400_000  # 2026-10-15T00:00:00Z
NOV20 = 1_795_132_800_000  # 2026-11-20T00:00:00Z


def streaming() -> list[UsageEvent]:
    return [
        UsageEvent(
            event_id=str(uuid.uuid4()),
            occurred_at=(OCT15, NOV20)[i % 2] + i * 1000,
            tenant=("acme", "globex")[i % 2],
            provider="acme-ai",
            model="alpha",
            request_id=f"s{i}",
            attempt=1,
            status="ok",
            input_tokens=100 + i,
            output_tokens=10,
        )
        for i in range(200)
    ]


def publish(kafka: KafkaSettings, spool: Path, batch: list[UsageEvent]) -> None:
    publisher = UsagePublisher(kafka, load_settings(PublisherSettings, spool_dir=spool))
    try:
        assert all(publisher.emit(e) for e in batch)
        assert publisher.flush(30) == 0
    finally:
        publisher.close()


def cli(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "costplane.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_rerate_through_the_worker_while_events_arrive(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, tmp_path: Path
) -> None:
    for label in ("A", "B"):
        (tmp_path / f"{label}.json").write_text(json.dumps(catalog_document(label)))
    clickhouse = load_settings(ClickHouseSettings, chdb_path=tmp_path / "chdb", database=f"t{uuid.uuid4().hex[:10]}")
    create_topics(kafka_settings, load_settings(WorkerSettings))
    env = worker_env(kafka_settings, redis_settings, clickhouse, max_clock_skew_ms=10 * 366 * DAY, sink_max_age_s=0.5)
    env["COSTPLANE_PRICING_CATALOG"] = str(tmp_path / "A.json")
    worker = WorkerProcess(env, tmp_path / "worker.log", role="sink").start()
    try:
        worker.wait_ready(90)
        history = events()
        publish(kafka_settings, tmp_path / "spool1", history)

        def attempts() -> int:
            rows = cli(env, "report", "spend", "--since", "2026-10-01", "--until", "2026-12-01", "--format", "json")
            return sum(r["attempts"] for r in rows)

        deadline = time.monotonic() + 90
        while attempts() < len(history) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert attempts() == len(history), worker.log_tail()

        more = streaming()
        sender = threading.Thread(
            target=lambda: [
                publish(kafka_settings, tmp_path / f"spool-{i}", more[i : i + 20]) for i in range(0, len(more), 20)
            ]
        )
        sender.start()
        answer = cli(
            env,
            "rerate",
            "--catalog",
            str(tmp_path / "B.json"),
            "--since",
            "2026-10-31",
            "--until",
            "2026-11-01T12:00Z",
            "--format",
            "json",
        )
        sender.join(120)
        assert answer["written"] is True and answer["price_versions"] == ["B@2026"]

        everything = [*history, *more]
        deadline = time.monotonic() + 90
        while attempts() < len(everything) and time.monotonic() < deadline:
            time.sleep(0.5)
        rows = cli(
            env,
            "report",
            "spend",
            "--by",
            "tenant,model",
            "--since",
            "2026-10-01",
            "--until",
            "2026-12-01",
            "--format",
            "json",
        )
        got = {(r["tenant"], r["model"]): (r["attempts"], r["cost_nanos"]) for r in rows}
        want: dict[tuple[str, str], tuple[int, int]] = {}
        re_rated = {e.event_id for e in history if 1_793_404_800_000 <= e.occurred_at < 1_793_577_600_000}
        for e in everything:
            n, c = want.get((e.tenant, e.model), (0, 0))
            want[(e.tenant, e.model)] = (n + 1, c + cost(e, "B" if e.event_id in re_rated else "A"))
        assert got == want, worker.log_tail()
        assert PRICES["B"]["alpha"][0] == 3000  # the table the expectations use

        again = cli(
            env,
            "rerate",
            "--catalog",
            str(tmp_path / "B.json"),
            "--since",
            "2026-10-31",
            "--until",
            "2026-11-01T12:00Z",
            "--format",
            "json",
        )
        assert again["changed_events"] == 0 and again["events"] == len(re_rated)
    finally:
        worker.stop()
