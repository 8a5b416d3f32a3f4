"""The worker's HTTP API on a real worker process: budget status, recent decisions, the drift gauge, the token."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer

from costplane.budgets import window_for
from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.testing import usage_event
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse, pytest.mark.slow]
TOKEN = "s3cret-token"
TENANT = "api-co"


def make_event(user: str, tokens: int) -> UsageEvent:
    return usage_event(tenant=TENANT, input_tokens=tokens, output_tokens=0, user_id=user, feature="chat")


def produce(kafka: KafkaSettings, events: list[UsageEvent]) -> None:
    value, headers = UsageCodec.schemaless().encode_batch(TENANT, events)
    producer = Producer(kafka.confluent_config())
    producer.produce(kafka.topic("usage"), key=TENANT.encode(), value=value, headers=headers)
    assert producer.flush(10) == 0


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - local test URL
            body, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


@pytest.fixture
def worker(kafka_settings: KafkaSettings, redis_settings: RedisSettings, tmp_path: Path) -> Iterator[WorkerProcess]:
    clickhouse = load_settings(ClickHouseSettings, chdb_path=tmp_path / "chdb", database="api")
    create_topics(kafka_settings, load_settings(WorkerSettings))
    env = worker_env(
        kafka_settings,
        redis_settings,
        clickhouse,
        api_token=TOKEN,
        drift_check_s=1,
        data_dir=tmp_path / "worker",
        sink_max_age_s=0.2,
    )
    proc = WorkerProcess(env, tmp_path / "worker.log", role="all").start()
    try:
        proc.wait_ready(90)
        yield proc
    finally:
        proc.stop()
        client = redis.Redis.from_url(redis_settings.url.get_secret_value())
        for key in client.scan_iter(f"{redis_settings.key_prefix}:*", count=10_000):
            client.delete(key)
        client.close()


def test_status_decisions_drift_and_token(worker: WorkerProcess, kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text(f"- {{id: api-tokens, scope: 'tenant={TENANT},user=*', limit_tokens: 1000}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "costplane.cli", "budget", "apply", str(path)],
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: _get(worker.url + f"/api/budgets/status?tenant={TENANT}", TOKEN)[0] == 200,
        30,
        "the worker to publish the budget",
    )
    # u1 spends 600 + 600 tokens: over the 1000-token limit, a block decision; u2 spends 300.
    produce(kafka_settings, [make_event("u1", 600), make_event("u1", 600)])
    produce(kafka_settings, [make_event("u2", 300)])

    # No token, a wrong token: 401 and nothing about the data.
    for token in (None, "wrong"):
        for path in ("/api/budgets/status", "/api/decisions/recent", "/api/report?by=tenant"):
            status, body = _get(worker.url + path, token)
            assert (status, body) == (401, {"error": "unauthorized"})
    # The framework's own pages are not served; health stays open.
    for path in ("/router/", "/table/", "/graph/", "/stats/"):
        assert _get(worker.url + path)[0] == 404
    assert _get(worker.url + "/healthz")[0] == 200

    def decided() -> Any:
        status, body = _get(worker.url + f"/api/decisions/recent?tenant={TENANT}", TOKEN)
        return status == 200 and [d for d in body if d["type"] == "decision"]

    decisions = wait_for(decided, 60, "the block decision")
    assert [(d["action"], d["member"]) for d in decisions] == [("block", f"tenant={TENANT},user=u1")]

    def status_rows() -> Any:
        status, body = _get(worker.url + f"/api/budgets/status?tenant={TENANT}&reconcile=1", TOKEN)
        assert status == 200, body
        rows = {r["member"]: r for r in body}
        ok = len(rows) == 2 and all(r["ledger_spent"] == r["spent"] for r in rows.values())
        return ok and rows

    rows = wait_for(status_rows, 60, "counters and ledger to agree")
    u1, u2 = rows[f"tenant={TENANT},user=u1"], rows[f"tenant={TENANT},user=u2"]
    day = window_for("day", "UTC", int(time.time() * 1000))
    assert (u1["spent"], u1["action"], u1["decision_until_ms"]) == (1200, "block", day.end_ms)
    assert (u2["spent"], u2["action"], u2["drift"]) == (300, None, 0)
    assert _get(worker.url + "/api/budgets/status?tenant=nobody", TOKEN)[0] == 404

    def drift_metric() -> Any:
        status, text = _get(worker.url + "/metrics")
        lines = [ln for ln in str(text).splitlines() if ln.startswith("costplane_budget_drift{")]
        return lines

    # The gauge is measured every second: one measurement may predate the ledger's last rows, the next agrees.
    expected = f'costplane_budget_drift{{budget="api-tokens",tenant="{TENANT}",unit="tokens"}} 0.0'
    lines = wait_for(lambda: expected in drift_metric() and drift_metric(), 30, "the drift gauge to settle")
    assert expected in lines
