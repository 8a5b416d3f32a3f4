"""The worker's HTTP API is safe by default, on a real worker process (loopback only).

Before: ``/api/report`` served every tenant's spend to anyone who reached the port, Faust's own ``/router/`` and
``/table/`` pages were served, and an unknown router path was a 500 with a traceback in the log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.testing import usage_event
from costplane.reports.options import ReportOptions
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = pytest.mark.chaos  # the security suite
FULL = "full-access-token-0123456789"
ACME = "acme-only-token-0123456789"


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


@pytest.mark.http
def test_binding_beyond_loopback_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    env = {"COSTPLANE_DEV_STATE_DIR": str(tmp_path), "COSTPLANE_WORKER_WEB_HOST": "0.0.0.0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "costplane.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "COSTPLANE_WORKER_WEB_HOST=0.0.0.0" in done.stderr and "COSTPLANE_WORKER_API_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


def _event(tenant: str) -> UsageEvent:
    return usage_event(tenant=tenant, input_tokens=100, output_tokens=10)


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.clickhouse
def test_tenant_tokens_read_their_tenant_only_and_bad_paths_say_404(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings, tmp_path: Path
) -> None:
    clickhouse = load_settings(ClickHouseSettings, chdb_path=tmp_path / "chdb", database="safety")
    create_topics(kafka_settings, load_settings(WorkerSettings))
    env = worker_env(
        kafka_settings,
        redis_settings,
        clickhouse,
        api_token=FULL,
        api_tenant_tokens=f"acme={ACME}",
        data_dir=tmp_path / "worker",
        sink_max_age_s=0.2,
    )
    worker = WorkerProcess(env, tmp_path / "worker.log", role="all").start()
    codec = UsageCodec.schemaless()
    producer = Producer(kafka_settings.confluent_config())
    for tenant in ("acme", "globex"):
        value, headers = codec.encode_batch(tenant, [_event(tenant) for _ in range(3)])
        producer.produce(kafka_settings.topic("usage"), key=tenant.encode(), value=value, headers=headers)
    assert producer.flush(10) == 0
    query = ReportOptions.parse("spend", by=["tenant"]).to_query_string()
    try:
        worker.wait_ready(90)
        deadline = time.monotonic() + 60
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(rows) < 2:
            status, answer = _get(f"{worker.url}/api/report?{query}", FULL)
            rows = answer["rows"] if status == 200 else []
            time.sleep(0.5)
        assert sorted(r["tenant"] for r in rows) == ["acme", "globex"]

        status, answer = _get(f"{worker.url}/api/report?{query}", ACME)
        assert status == 200 and [r["tenant"] for r in answer["rows"]] == ["acme"]
        assert _get(f"{worker.url}/api/report?{query}&tenant=globex", ACME)[0] == 403
        assert _get(f"{worker.url}/api/decisions/recent?tenant=globex", ACME)[0] == 403
        assert _get(f"{worker.url}/api/report?{query}")[0] == 401
        assert _get(f"{worker.url}/api/report?{query}", "wrong-token-0123456789")[0] == 401

        for path in (
            "/router/",
            "/router/x/y",
            "/table/",
            "/table/usage/",
            "/graph/",
            "/stats/",
            "/nope",
            "/api/nope",
            "/%ff",
            "/api/report/../../etc/passwd",
        ):
            status, body = _get(f"{worker.url}{path}", FULL)
            assert status in (404, 405), (path, status)
            assert "Traceback" not in str(body), path
        assert worker.proc is not None and worker.proc.poll() is None
        assert "Traceback" not in worker.log_tail(200_000)
    finally:
        worker.stop()
