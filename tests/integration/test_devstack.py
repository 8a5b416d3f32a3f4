"""The dev stack end to end: a private stack (own state dir and ports) goes up, keeps data across down + up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.clickhouse, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for a second, private stack so this test never disturbs the shared one."""
    env = dict(os.environ)
    env.update(
        COSTPLANE_DEV_STATE_DIR=str(tmp_path / "state"),
        COSTPLANE_DEV_KAFKA_PORT=str(_free_port()),
        COSTPLANE_DEV_KAFKA_CONTROLLER_PORT=str(_free_port()),
        COSTPLANE_DEV_REDIS_PORT=str(_free_port()),
        COSTPLANE_DEV_KAFKA_HEAP="384m",
        COSTPLANE_CLICKHOUSE_CHDB_PATH=str(tmp_path / "state" / "clickhouse"),
    )
    env.pop("COSTPLANE_KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("COSTPLANE_REDIS_URL", None)
    yield env
    subprocess.run([sys.executable, "-m", "costplane.cli", "dev", "down"], env=env, check=False, capture_output=True)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costplane.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _produce(bootstrap: str, topic: str, value: bytes) -> tuple[int, int]:
    delivered: list[tuple[int, int]] = []
    producer = Producer({"bootstrap.servers": bootstrap})

    def on_delivery(err: object, msg: object) -> None:
        if err is None:
            delivered.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    producer.produce(topic, value=value, partition=0, on_delivery=on_delivery)
    producer.flush(30)
    assert delivered, "the broker did not acknowledge the message"
    return delivered[0]


def _consume(bootstrap: str, topic: str, partition: int, offset: int) -> bytes | None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                return msg.value()  # type: ignore[no-any-return]
        return None
    finally:
        consumer.close()


def test_up_round_trip_and_data_survives_down_up(private_stack_env: dict[str, str]) -> None:
    env = private_stack_env
    up = _cli(env, "dev", "up", "--json")
    assert up.returncode == 0, up.stderr
    status = json.loads(up.stdout)
    assert set(status) == {"kafka", "redis", "clickhouse"}
    assert all(status[s]["healthy"] is True for s in status)
    bootstrap = status["kafka"]["bootstrap"]
    assert bootstrap.endswith(":" + env["COSTPLANE_DEV_KAFKA_PORT"])

    # up is idempotent: a second call starts nothing new and reports the same endpoints.
    again = _cli(env, "dev", "up", "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == status

    topic = f"devstack-{uuid.uuid4().hex[:8]}"
    payload = uuid.uuid4().hex.encode()
    partition, offset = _produce(bootstrap, topic, payload)
    assert _consume(bootstrap, topic, partition, offset) == payload
    r = redis.Redis.from_url(status["redis"]["url"])
    assert r.ping()
    r.set("cp:devstack:probe", payload)
    r.close()

    down = _cli(env, "dev", "down")
    assert down.returncode == 0 and "kafka: stopped" in down.stdout and "redis: stopped" in down.stdout
    dead = _cli(env, "dev", "status", "--json")
    assert dead.returncode == 1
    dead_status = json.loads(dead.stdout)
    assert dead_status["kafka"]["healthy"] is False and dead_status["redis"]["healthy"] is False

    assert _cli(env, "dev", "up").returncode == 0
    assert _consume(bootstrap, topic, partition, offset) == payload
    r = redis.Redis.from_url(status["redis"]["url"])
    assert r.get("cp:devstack:probe") == payload
    r.close()
    st = _cli(env, "dev", "status", "--json")
    assert st.returncode == 0 and json.loads(st.stdout) == status


def test_commands_read_endpoints_from_the_running_stack(private_stack_env: dict[str, str]) -> None:
    env = private_stack_env
    assert _cli(env, "dev", "up").returncode == 0
    probe = (
        "from costplane.config import KafkaSettings, RedisSettings, load_settings\n"
        "print(load_settings(KafkaSettings).bootstrap_servers)\n"
        "print(load_settings(RedisSettings).url.get_secret_value())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "XDG_STATE_HOME": "/nonexistent"},
        capture_output=True,
        text=True,
        check=True,
    )
    # COSTPLANE_DEV_STATE_DIR points at the private stack, so its endpoints win over the defaults …
    assert out.stdout.split() == [
        f"127.0.0.1:{env['COSTPLANE_DEV_KAFKA_PORT']}",
        f"redis://127.0.0.1:{env['COSTPLANE_DEV_REDIS_PORT']}/0",
    ]
    # … and explicit COSTPLANE_* settings win over the stack.
    override = {**env, "COSTPLANE_KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9092"}
    out = subprocess.run([sys.executable, "-c", probe], env=override, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "kafka.example:9092"
