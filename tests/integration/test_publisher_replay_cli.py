"""``costplane replay``: valid lines reach the broker, invalid ones are reported by line number and reason."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from costplane.cli.main import build_app
from costplane.config import KafkaSettings
from costplane.publisher import UsageCodec
from costplane.publisher.jsonio import event_to_json_dict
from costplane.synthetic import generate

pytestmark = [pytest.mark.kafka]


def _write(path: Path, bad_lines: dict[int, str], total: int = 30) -> list[str]:
    events = list(generate(total, seed=21))
    lines = [json.dumps(event_to_json_dict(e)) for e in events]
    for number, text in bad_lines.items():
        lines.insert(number - 1, text)
    path.write_text("\n".join(lines) + "\n")
    return [e.event_id for e in events]


def _published_ids(kafka: KafkaSettings, expected: int) -> set[str]:
    topic = kafka.topic("usage")
    consumer = Consumer(
        {"bootstrap.servers": kafka.bootstrap_servers, "group.id": uuid.uuid4().hex, "enable.auto.commit": False}
    )
    ids: set[str] = set()
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + 30
        while len(ids) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is None:
                    ids |= {e.event_id for e in UsageCodec.schemaless().decode(msg.value(), msg.headers()).events}
    finally:
        consumer.close()
    return ids


def _env(kafka: KafkaSettings, tmp_path: Path) -> dict[str, str]:
    return {
        "COSTPLANE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "COSTPLANE_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "COSTPLANE_PUBLISHER_SPOOL_DIR": str(tmp_path / "spool"),
    }


def test_replay_skips_invalid_lines_and_publishes_the_rest(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = _write(path, {3: '{"tenant": "acme"', 10: json.dumps({"event_id": "x", "tenant": "acme"})})
    result = CliRunner().invoke(build_app(), ["replay", str(path), "--json"], env=_env(kafka_settings, tmp_path))
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["published"] == len(good)
    assert [(s["line"], s["reason"]) for s in summary["skipped"]] == [(3, "bad_json"), (10, "missing_field")]
    assert _published_ids(kafka_settings, len(good)) == set(good)


def test_replay_strict_stops_at_the_first_invalid_line(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    bad = dict(next(iter([event_to_json_dict(e) for e in generate(1, seed=2)])), input_tokens=-4)
    _write(path, {5: json.dumps(bad)})
    result = CliRunner().invoke(
        build_app(), ["replay", str(path), "--strict", "--json"], env=_env(kafka_settings, tmp_path)
    )
    assert result.exit_code == 2
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["published"] == 4 and summary["skipped"][0] == {
        "line": 5,
        "reason": "negative_tokens",
        "message": summary["skipped"][0]["message"],
    }
    assert _published_ids(kafka_settings, 4) and len(_published_ids(kafka_settings, 4)) == 4


def test_replay_of_a_missing_file_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["replay", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 3 and "cannot read" in result.output
