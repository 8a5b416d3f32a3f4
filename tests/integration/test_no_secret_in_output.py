"""No secret in any output: every secret set, logs at DEBUG, every line of the commands searched for them.

Before: ``costplane alerts test`` printed the Slack and webhook URLs with their tokens (httpx's INFO lines), and
the passwords inside ``COSTPLANE_CLICKHOUSE_URL`` and the Schema Registry URL were printed by ``config show`` and
report errors. Real processes, a real loopback HTTP receiver; nothing stands in for the HTTP client.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from costplane.redact import Redactor, mask_url

pytestmark = [pytest.mark.http, pytest.mark.chaos]

SECRETS = {
    "slack": "xoxbSlackT0ken1234",
    "webhook": "hookT0ken5678abcd",
    "pagerduty": "R0UT1NGK3Ysecret990123456789abcd",  # 32 characters, as PagerDuty requires
    "clickhouse": "chPassw0rd4242",
    "registry": "srPassw0rd7373",
    "redis": "redisPassw0rd11",
    "sasl": "saslPassw0rd2222",
}


@pytest.fixture
def receiver() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status":"success","dedup_key":"k"}')

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _env(base: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTPLANE_")}
    env.update(
        {
            "COSTPLANE_LOG_LEVEL": "DEBUG",
            "COSTPLANE_DEV_STATE_DIR": str(tmp_path / "state"),  # no stack there: nothing is discovered
            "COSTPLANE_ALERTS_SLACK_WEBHOOK_URL": f"{base}/services/T0/B0/{SECRETS['slack']}",
            "COSTPLANE_ALERTS_WEBHOOK_URLS": f"{base}/hook?token={SECRETS['webhook']}",
            "COSTPLANE_ALERTS_PAGERDUTY_ROUTING_KEY": SECRETS["pagerduty"],
            "COSTPLANE_ALERTS_PAGERDUTY_URL": f"{base}/v2/enqueue",
            "COSTPLANE_ALERTS_RETRIES": "0",
            "COSTPLANE_CLICKHOUSE_URL": f"http://ops:{SECRETS['clickhouse']}@127.0.0.1:9/",
            "COSTPLANE_KAFKA_SCHEMA_REGISTRY_URL": f"http://ops:{SECRETS['registry']}@127.0.0.1:9",
            "COSTPLANE_KAFKA_SASL_PASSWORD": SECRETS["sasl"],
            "COSTPLANE_REDIS_URL": f"redis://:{SECRETS['redis']}@127.0.0.1:9/0",
        }
    )
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costplane.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_no_command_prints_a_secret(receiver: str, tmp_path: Path) -> None:
    env = _env(receiver, tmp_path)
    runs = {
        "alerts test": _run(env, "alerts", "test"),
        "alerts test --json": _run(env, "alerts", "test", "--json"),
        "config show": _run(env, "config", "show"),
        "config show --json": _run(env, "config", "show", "--json"),
        "report": _run(env, "report", "spend", "--since", "2026-01-01"),
        "dev status --json": _run(env, "dev", "status", "--json"),
    }
    assert runs["alerts test --json"].returncode == 0, runs["alerts test --json"].stderr
    # httpx logged its requests at INFO/DEBUG (the lines that carried the tokens before): they are there, masked.
    assert "HTTP Request: POST" in runs["alerts test"].stderr
    assert f"{receiver}/***" in runs["alerts test"].stderr
    assert "ops:***@127.0.0.1" in runs["config show --json"].stdout
    assert runs["report"].returncode != 0 and runs["report"].stderr.strip()
    for name, done in runs.items():
        for secret in SECRETS.values():
            assert secret not in done.stdout + done.stderr, f"{name} printed {secret}"
        assert "Traceback" not in done.stderr, name


def test_redactor_masks_urls_and_known_secrets() -> None:
    assert mask_url("http://u:p4ss@h:1/x?token=abc&x=1") == "http://u:***@h:1/x?token=***&x=1"
    assert mask_url("clickhouse://default:s3cret@ch:8123/db") == "clickhouse://default:***@ch:8123/db"
    redact = Redactor(["https://hooks.slack.com/services/T/B/xyzsecret", "routingkey123"])
    assert (
        redact('POST https://hooks.slack.com/services/T/B/xyzsecret "HTTP/1.1 200"')
        == 'POST https://hooks.slack.com/*** "HTTP/1.1 200"'
    )
    assert redact("key=routingkey123") == "key=***"
    assert redact.value({"e": ValueError("http://a:bcdefg@h")}) == {"e": "ValueError('http://a:***@h')"}


@pytest.mark.kafka
@pytest.mark.redis
def test_a_worker_with_every_secret_set_logs_none_of_them(
    receiver: str, tmp_path: Path, kafka_settings: Any, redis_settings: Any
) -> None:
    """The stream worker at DEBUG, delivering real alerts (a dead-letter flood) to Slack, PagerDuty and a webhook
    on a loopback receiver, its API called with and without its tokens: its whole log holds no secret."""
    from confluent_kafka import Producer

    from costplane.config import WorkerSettings, load_settings
    from costplane.streams.topics import create_topics
    from costplane.streams.worker.testing import WorkerProcess, worker_env

    secrets = {"api": "apiT0ken-full-0123456789", "tenant": "apiT0ken-acme-0123456789", **SECRETS}
    create_topics(kafka_settings, load_settings(WorkerSettings))
    env = worker_env(
        kafka_settings, redis_settings, None, api_token=secrets["api"], api_tenant_tokens=f"acme={secrets['tenant']}"
    )
    env.update(
        {
            key: value
            for key, value in _env(receiver, tmp_path).items()
            if key.startswith("COSTPLANE_ALERTS_") or key == "COSTPLANE_LOG_LEVEL"
        }
    )
    env.update(
        {
            "COSTPLANE_ALERTS_DEAD_LETTERS_PER_MINUTE": "60",
            "COSTPLANE_ALERTS_DEAD_LETTER_WINDOW_S": "5",
            "COSTPLANE_ALERTS_PAGERDUTY_MIN_SEVERITY": "info",
        }
    )
    worker = WorkerProcess(env, tmp_path / "worker.log", role="stream").start()
    try:
        worker.wait_ready(90)
        producer = Producer(kafka_settings.confluent_config())
        for i in range(20):
            producer.produce(kafka_settings.topic("usage"), key=b"acme", value=b"\x00not avro %d" % i)
        assert producer.flush(10) == 0
        deadline = time.monotonic() + 60
        while "alert_delivered" not in worker.log_tail(1_000_000) and time.monotonic() < deadline:
            time.sleep(0.5)
        for token in (None, "wrong", secrets["api"], secrets["tenant"]):
            request = urllib.request.Request(
                f"{worker.url}/api/decisions/recent?tenant=acme",
                headers={"Authorization": f"Bearer {token}"} if token else {},
            )
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(request, timeout=10).read()  # noqa: S310 - local test URL
    finally:
        worker.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert log.count("alert_delivered") >= 3, log[-3000:]  # Slack, PagerDuty and the webhook each got the alert
    for name, secret in secrets.items():
        assert secret not in log, f"the worker log holds the {name} secret"
