"""Run real worker processes from tests and benchmarks: environment, readiness, clean stop and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_env(
    kafka: KafkaSettings, redis_settings: RedisSettings, clickhouse: ClickHouseSettings | None, **worker: Any
) -> dict[str, str]:
    """The environment of a worker subprocess pointed at these settings (``worker`` → COSTPLANE_WORKER_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTPLANE_")}
    env.update(
        {
            "COSTPLANE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "COSTPLANE_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "COSTPLANE_REDIS_URL": redis_settings.url.get_secret_value(),
            "COSTPLANE_REDIS_KEY_PREFIX": redis_settings.key_prefix,
            "COSTPLANE_WORKER_SESSION_TIMEOUT_S": "6",
        }
    )
    if clickhouse is not None:
        env["COSTPLANE_CLICKHOUSE_DATABASE"] = clickhouse.database
        if clickhouse.url:
            env["COSTPLANE_CLICKHOUSE_URL"] = clickhouse.url
        else:
            env["COSTPLANE_CLICKHOUSE_CHDB_PATH"] = str(clickhouse.chdb_path)
    for key, value in worker.items():
        env[f"COSTPLANE_WORKER_{key.upper()}"] = str(value)
    return env


class WorkerProcess:
    """One ``costplane worker`` subprocess with its log file and web port."""

    def __init__(self, env: dict[str, str], log_path: Path, role: str = "all") -> None:
        self.port = free_port()
        self.env = {**env, "COSTPLANE_WORKER_WEB_PORT": str(self.port), "COSTPLANE_WORKER_ROLE": role}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "costplane.cli", "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout_s) as resp:  # noqa: S310 - local test URL
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _ = self.get("/readyz", timeout_s=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM without waiting: the worker leaves its group cleanly while the caller keeps working."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def wait_exit(self, timeout_s: float) -> int:
        assert self.proc is not None
        return int(self.proc.wait(timeout_s))
