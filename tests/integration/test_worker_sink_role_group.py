"""A sink-only worker never joins the stream role's consumer group.

The sink reads through its own group (``<group>.sink``); a sink process that also sat in ``<group>`` (the stream
role's) would trigger a rebalance of every stream worker each time it starts or stops, pausing enforcement for
nothing. The group's members are read from the broker itself."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse]


def _members(admin: AdminClient, group: str) -> int | None:
    """How many members ``group`` has on the broker (None: the broker does not know the group)."""
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if described.state in (ConsumerGroupState.DEAD, ConsumerGroupState.UNKNOWN):
        return None
    return len(described.members)


def test_a_sink_process_stays_out_of_the_stream_group(
    kafka_settings: KafkaSettings,
    redis_settings: RedisSettings,
    clickhouse_settings: ClickHouseSettings,
    tmp_path: Path,
) -> None:
    from costplane.config import WorkerSettings, load_settings

    create_topics(kafka_settings, load_settings(WorkerSettings))
    env = worker_env(kafka_settings, redis_settings, clickhouse_settings, data_dir=tmp_path / "data")
    sink = WorkerProcess(env, tmp_path / "sink.log", role="sink").start()
    admin = AdminClient({"bootstrap.servers": kafka_settings.bootstrap_servers})
    stream_group = f"{kafka_settings.topic_prefix}.worker"
    try:
        sink.wait_ready(90)
        deadline = time.monotonic() + 30
        while _members(admin, f"{stream_group}.sink") != 1:  # the sink's own consumer has joined its group
            assert time.monotonic() < deadline, sink.log_tail()
            time.sleep(0.5)
        for _ in range(10):  # and, for ten seconds, nothing of the process sits in the stream role's group
            assert not _members(admin, stream_group), sink.log_tail()
            time.sleep(1)
    finally:
        sink.stop()
