"""Shared fixtures: unit tests get no network; integration tests get the real stack with unique names.

Service tests are marked ``kafka``, ``redis`` or ``clickhouse``. They use the running dev stack (or start it with
the same code as ``costplane dev up``), and each test gets its own topic prefix, Redis key prefix and ClickHouse
database so tests never see each other's data. A test without a service marker that opens an internet socket
fails: that is how "unit tests never touch the network" is enforced.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, load_settings

SERVICE_MARKERS = ("kafka", "redis", "clickhouse", "chaos", "http")


class NetworkBlocked(RuntimeError):
    """Raised when a unit test (no service marker) tries to open a network connection."""


@pytest.fixture(autouse=True)
def _block_network_for_unit_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if any(request.node.get_closest_marker(m) for m in SERVICE_MARKERS):
        return
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkBlocked(f"unit test tried to connect to {address!r}; mark it kafka/redis/clickhouse")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def dev_stack() -> Iterator[dict[str, Any]]:
    """The running dev stack's status; starts it (like ``costplane dev up``) when it is not running."""
    from costplane.devstack.stack import DevStack

    stack = DevStack.from_settings()
    started_here = not stack.is_running()
    if started_here:
        stack.up()
    yield stack.status()
    if started_here:
        stack.down()


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kafka_settings(dev_stack: dict[str, Any]) -> KafkaSettings:
    """Kafka settings pointing at the stack with a topic prefix no other test uses."""
    return load_settings(KafkaSettings, bootstrap_servers=dev_stack["kafka"]["bootstrap"], topic_prefix=_unique("t"))


@pytest.fixture
def redis_settings(dev_stack: dict[str, Any]) -> RedisSettings:
    """Redis settings pointing at the stack with a key prefix no other test uses."""
    return load_settings(RedisSettings, url=dev_stack["redis"]["url"], key_prefix=_unique("t"))


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded ClickHouse directory for the whole test session (one process may own it)."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def clickhouse_settings(chdb_dir: Path) -> ClickHouseSettings:
    """ClickHouse settings with a database no other test uses (a server when COSTPLANE_CLICKHOUSE_URL is set)."""
    return load_settings(ClickHouseSettings, chdb_path=chdb_dir, database=_unique("t"))
