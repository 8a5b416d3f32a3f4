"""The benchmarks leave nothing behind on the dev stack: their topics and Redis keys go at the end of a run."""

from __future__ import annotations

import time

import pytest
import redis
from confluent_kafka.admin import AdminClient

from bench.common import drop_redis_prefix, drop_topics
from costplane.config import KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.streams.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def _topics(kafka: KafkaSettings) -> set[str]:
    return set(AdminClient(kafka.confluent_config()).list_topics(timeout=10).topics)


def test_drop_topics_deletes_only_the_runs_own_topics(kafka_settings: KafkaSettings) -> None:
    other = load_settings(
        KafkaSettings,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        topic_prefix=kafka_settings.topic_prefix + "x",
    )  # shares the text, not the prefix
    created = set(create_topics(kafka_settings, load_settings(WorkerSettings)))
    kept = set(create_topics(other, load_settings(WorkerSettings)))
    assert created <= _topics(kafka_settings)
    assert drop_topics(kafka_settings) == len(created)
    deadline = time.monotonic() + 30
    while created & _topics(kafka_settings) and time.monotonic() < deadline:
        time.sleep(0.2)  # metadata follows the controller's deletion
    assert not created & _topics(kafka_settings)
    assert kept <= _topics(kafka_settings)
    assert drop_topics(kafka_settings) == 0
    drop_topics(other)


def test_drop_redis_prefix_deletes_only_the_runs_own_keys(redis_settings: RedisSettings) -> None:
    client = redis.Redis.from_url(redis_settings.url.get_secret_value())
    mine = [f"{redis_settings.key_prefix}:k{i}" for i in range(25_000)]
    client.mset(dict.fromkeys(mine, b"1"))
    client.set(f"{redis_settings.key_prefix}x:other", b"1")
    assert drop_redis_prefix(redis_settings.url.get_secret_value(), redis_settings.key_prefix) == len(mine)
    assert client.exists(*mine[:100]) == 0 and client.get(f"{redis_settings.key_prefix}x:other") == b"1"
    client.delete(f"{redis_settings.key_prefix}x:other")
