"""``costplane alerts tail`` against the real broker: JSON lines out, tenant filter, and "from the end" by default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.config import KafkaSettings
from costplane.streams.alerting.codec import encode_alert
from costplane.streams.alerting.model import AlertEvent, alert_to_json_dict
from costplane.streams.core.findings import Contributor

pytestmark = [pytest.mark.kafka]

ALERT = AlertEvent(
    alert_id="5d1f7c8e-1f7a-5b43-9e1d-2a6b1c0f9e77",
    dedup_key="retry_storm:acme:feature=chat",
    kind="retry_storm",
    action="trigger",
    severity="critical",
    tenant="acme",
    summary="22% of attempts are retries",
    window_start_ms=1_790_000_000_000,
    window_end_ms=1_790_000_060_000,
    occurred_at_ms=1_790_000_061_000,
    subject={"feature": "chat"},
    numbers={"retry_ratio": "0.22"},
    contributors=(Contributor("user_id", "u-17", 3_210_000_000, 120_000, 300),),
    suggested_action="Cap retries.",
    runbook="docs/runbook.md#retry-storm",
)


def _env(kafka: KafkaSettings) -> dict[str, str]:
    return {
        "COSTPLANE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "COSTPLANE_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
    }


def _produce(kafka: KafkaSettings, *alerts: AlertEvent) -> None:
    producer = Producer(kafka.confluent_config())
    for alert in alerts:
        value, headers = encode_alert(alert)
        wire: list[tuple[str, str | bytes | None]] = list(headers)
        producer.produce(kafka.topic("alerts"), value=value, key=alert.tenant.encode(), headers=wire)
    assert producer.flush(15) == 0


def _create_topic(kafka: KafkaSettings) -> None:
    admin = AdminClient(kafka.confluent_config())
    for future in admin.create_topics([NewTopic(kafka.topic("alerts"), 3, 1)]).values():
        future.result(15)


def test_tail_prints_json_lines_filtered_by_tenant(kafka_settings: KafkaSettings) -> None:
    _create_topic(kafka_settings)
    other = replace(ALERT, tenant="globex", alert_id="other")
    resolve = replace(ALERT, action="resolve", alert_id="resolve-1", summary="Resolved: 22% of attempts are retries")
    _produce(kafka_settings, other, ALERT, resolve)
    result = CliRunner().invoke(
        build_app(),
        ["alerts", "tail", "--tenant", "acme", "--json", "--from-beginning", "--max", "2", "--idle-timeout", "30"],
        env=_env(kafka_settings),
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    by_id = {line["alert_id"]: line for line in lines}
    assert set(by_id) == {ALERT.alert_id, "resolve-1"}  # globex filtered out; partitions may interleave
    assert by_id[ALERT.alert_id] == alert_to_json_dict(ALERT)
    people = CliRunner().invoke(
        build_app(),
        ["alerts", "tail", "--tenant", "globex", "--from-beginning", "--max", "1", "--idle-timeout", "30"],
        env=_env(kafka_settings),
    )
    assert people.exit_code == 0, people.output
    assert "TRIGGER" in people.stdout and "globex" in people.stdout and "22% of attempts are retries" in people.stdout


def test_tail_starts_from_the_end_by_default(kafka_settings: KafkaSettings) -> None:
    _create_topic(kafka_settings)
    _produce(kafka_settings, replace(ALERT, alert_id="old"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "costplane.cli", "alerts", "tail", "--json", "--max", "1", "--idle-timeout", "60"],
        env={**os.environ, **_env(kafka_settings)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, n = time.monotonic() + 60, 0
        while proc.poll() is None and time.monotonic() < deadline:
            n += 1  # keep producing until the consumer, once assigned, sees one
            _produce(kafka_settings, replace(ALERT, alert_id=f"new-{n}"))
            time.sleep(0.5)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    [line] = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert line["alert_id"].startswith("new-")
