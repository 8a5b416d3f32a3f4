"""The local stack as one object: ``up`` (idempotent, waits for real answers), ``status``, ``down``.

``up`` writes ``<state>/endpoints.json``; every other command reads its endpoints from there unless ``COSTPLANE_*``
settings say otherwise (see costplane.config).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Literal

from costplane.config import ClickHouseSettings, DevStackSettings, load_settings
from costplane.devstack.clickhouse import ClickHouseTarget
from costplane.devstack.kafka import KafkaBroker
from costplane.devstack.prereqs import check_prerequisites
from costplane.devstack.redis_server import RedisServer

ServiceName = Literal["kafka", "redis", "clickhouse"]


class ServiceDidNotStart(RuntimeError):
    """A service did not answer within the start timeout (message carries its log tail)."""


class DevStack:
    """Kafka (KRaft), redis-server and ClickHouse (embedded chDB, or a server by URL) on this machine."""

    def __init__(self, settings: DevStackSettings, clickhouse: ClickHouseSettings) -> None:
        self.settings = settings
        self.kafka = KafkaBroker(settings)
        self.redis = RedisServer(settings)
        self.clickhouse = ClickHouseTarget(clickhouse)

    @classmethod
    def from_settings(cls) -> DevStack:
        settings = load_settings(DevStackSettings)
        # The stack's own chDB lives in its state dir unless COSTPLANE_CLICKHOUSE_CHDB_PATH/URL say otherwise.
        clickhouse = load_settings(ClickHouseSettings)
        return cls(settings, clickhouse)

    # -- lifecycle -------------------------------------------------------------------------------------------
    def up(self, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Start whatever is not running and wait until each service really answers. Idempotent."""
        say = progress or (lambda _msg: None)
        check_prerequisites(need_maven=not self.kafka.jars_ready())
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.kafka.jars_ready():
            say(f"resolving Apache Kafka {self.settings.kafka_version} from Maven Central (once)…")
        for name in ("redis", "kafka", "clickhouse"):
            self.start_service(name, progress=say)  # type: ignore[arg-type]
        status = self.status()
        self._write_endpoints(status)
        return status

    def start_service(self, name: ServiceName, progress: Callable[[str], None] | None = None) -> None:
        """Start one service (if needed) and wait for it to answer."""
        say = progress or (lambda _msg: None)
        timeout = self.settings.start_timeout_s
        if name == "kafka":
            self.kafka.start()
            say(f"waiting for Kafka on {self.kafka.bootstrap} (produce/consume round trip)…")
            self._wait("kafka", self.kafka.healthy, timeout, self.kafka.process.log_tail)
        elif name == "redis":
            self.redis.start()
            say(f"waiting for Redis on {self.redis.url} (PING)…")
            self._wait("redis", self.redis.healthy, timeout, self.redis.process.log_tail)
        else:
            self.clickhouse.prepare()
            say(f"checking ClickHouse at {self.clickhouse.dsn} (SELECT 1)…")
            self._wait("clickhouse", self.clickhouse.healthy, timeout, lambda: "")

    def stop_service(self, name: ServiceName) -> bool:
        """Stop one service started by this stack; True if it was running. (ClickHouse embedded has no process.)"""
        if name == "kafka":
            return self.kafka.stop()
        if name == "redis":
            return self.redis.stop()
        return False

    def down(self) -> dict[str, bool]:
        """Stop what ``up`` started (by its own pid files). Data stays in the state directory."""
        stopped = {"kafka": self.kafka.stop(), "redis": self.redis.stop()}
        self.settings.endpoints_file.unlink(missing_ok=True)
        return stopped

    def is_running(self) -> bool:
        return self.kafka.process.running() and self.redis.process.running()

    def status(self) -> dict[str, Any]:
        """Endpoints and health, in the shape ``costplane dev status --json`` prints."""
        return {
            "kafka": {
                "bootstrap": self.kafka.bootstrap,
                "healthy": self.kafka.process.running() and self.kafka.healthy(),
                "pid": self.kafka.process.pid(),
            },
            "redis": {
                "url": self.redis.url,
                "healthy": self.redis.process.running() and self.redis.healthy(),
                "pid": self.redis.process.pid(),
            },
            "clickhouse": {
                "dsn": self.clickhouse.dsn,
                "healthy": self.clickhouse.healthy(),
                "embedded": self.clickhouse.embedded,
                "chdb_path": str(self.clickhouse.settings.chdb_path) if self.clickhouse.embedded else None,
            },
            "state_dir": str(self.settings.state_dir),
        }

    # -- helpers ---------------------------------------------------------------------------------------------
    def _write_endpoints(self, status: dict[str, Any]) -> None:
        path = self.settings.endpoints_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2) + "\n")
        tmp.replace(path)

    @staticmethod
    def _wait(name: str, probe: Callable[[], bool], timeout_s: float, log_tail: Callable[[], str]) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if probe():
                return
            time.sleep(0.5)
        raise ServiceDidNotStart(f"{name} did not answer within {timeout_s:.0f}s. Last log lines:\n{log_tail()}")
