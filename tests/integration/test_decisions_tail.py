"""``costplane decisions tail`` follows the decisions topic: lines for people, the records as JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from confluent_kafka import Producer

from costplane.config import KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import worker_env

pytestmark = [pytest.mark.kafka]


def _record(tenant: str, member: str, kind: str = "decision") -> dict[str, object]:
    return {
        "type": kind,
        "action": "block",
        "tenant": tenant,
        "budget_id": "b1",
        "member": member,
        "reason": "1200 tokens spent reached the limit 1000 tokens per day",
        "spent": 1200,
        "limit": 1000,
        "unit": "tokens",
        "window_start_ms": 1_767_225_600_000,
        "window_end_ms": 1_767_312_000_000,
        "until_ms": 1_767_312_000_000,
        "version": 1,
        "at_ms": 1_767_230_000_000,
    }


def test_tail_from_the_beginning_filters_by_tenant(
    kafka_settings: KafkaSettings, redis_settings: RedisSettings
) -> None:
    create_topics(kafka_settings, load_settings(WorkerSettings))
    producer = Producer(kafka_settings.confluent_config())
    records = [
        _record("acme", "tenant=acme,user=u1"),
        _record("globex", "tenant=globex,user=u9"),
        _record("acme", "tenant=acme,user=u1", kind="lift"),
    ]
    for r in records:
        producer.produce(kafka_settings.topic("decisions"), key=str(r["tenant"]).encode(), value=json.dumps(r))
    assert producer.flush(10) == 0
    env = worker_env(kafka_settings, redis_settings, None)

    def tail(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "costplane.cli",
                "decisions",
                "tail",
                "--from-beginning",
                "--tenant",
                "acme",
                "--idle-timeout",
                "8",
                *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    as_json = tail("--json", "--max", "2")
    assert as_json.returncode == 0, as_json.stderr
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [records[0], records[2]]
    lines = tail("--max", "2").stdout.splitlines()
    assert len(lines) == 2 and "block" in lines[0] and "tenant=acme,user=u1" in lines[0]
    assert lines[1].split()[1:3] == ["lift", "block"]
