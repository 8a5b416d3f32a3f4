"""A real Redis Cluster for tests: three masters of redis-server processes (loopback, free ports), joined by
``redis-cli --cluster create``. Shared by the cluster tests of the guard, the window store and the worker."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis


@contextmanager
def running_cluster(home: Path, masters: int = 3) -> Iterator[list[int]]:
    """Start ``masters`` cluster-enabled redis-servers under ``home``, create the cluster, yield their ports."""
    ports = cluster_ports(masters)
    procs = [_start_node(home, port) for port in ports]
    try:
        for port in ports:
            _wait(lambda p=port: redis.Redis(port=p).ping(), 20)
        created = subprocess.run(  # noqa: S603 - our own redis-cli, loopback only
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        _wait(lambda: all(redis.Redis(port=p).cluster("info")["cluster_state"] == "ok" for p in ports), 30)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def _start_node(home: Path, port: int) -> subprocess.Popen[bytes]:
    node_dir = home / str(port)
    node_dir.mkdir(parents=True)
    return subprocess.Popen(  # noqa: S603 - our own redis-server, loopback only
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(node_dir / "nodes.conf"),
            "--cluster-node-timeout",
            "3000",
            "--dir",
            str(node_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus port (port + 10000) is free too and exists: below 55536."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(20000, 30000)
        if port in ports:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        ports.append(port)
    return ports


def _wait(probe: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return
        except redis.RedisError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"the cluster did not come up: {last!r}")
