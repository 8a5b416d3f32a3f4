"""Building Redis clients from settings: the cluster switch, and cluster failures seen as Redis errors."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import redis
from redis.exceptions import RedisClusterException, SlotNotCoveredError

from costplane.config import RedisSettings, load_settings
from costplane.enforcers.connect import open_client, open_store


def test_the_cluster_switch_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTPLANE_REDIS_URL", "redis://10.0.0.5:7000/0")
    monkeypatch.setenv("COSTPLANE_REDIS_CLUSTER", "true")
    assert load_settings(RedisSettings).cluster is True
    monkeypatch.delenv("COSTPLANE_REDIS_CLUSTER")
    assert load_settings(RedisSettings).cluster is False


def test_a_single_redis_gets_a_plain_client_with_the_guards_timeout() -> None:
    settings = load_settings(RedisSettings, url="redis://127.0.0.1:1/0", key_prefix="px", timeout_ms=30)
    client = open_client(settings, timeout_s=0.5)
    assert type(client) is redis.Redis  # connects on first use only: no network here
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.5
    store = open_store(settings)
    assert store.keys.prefix == "px" and isinstance(store.client, redis.Redis)
    assert store.client.connection_pool.connection_kwargs["socket_timeout"] == 0.03


@pytest.mark.parametrize("exc", [RedisClusterException("no node"), SlotNotCoveredError("slot 7 not covered")])
def test_the_stream_role_waits_out_a_cluster_failure_like_any_redis_error(exc: Exception) -> None:
    """A cluster client's own failures are not ``RedisError``s; the stream role must retry them, not crash."""
    from costplane.streams.pipeline.redis_io import RedisCalls
    from costplane.streams.worker.metrics import WorkerMetrics

    rt = SimpleNamespace(waiting=None, metrics=WorkerMetrics(), now_ms=lambda: 0)
    alerts = SimpleNamespace(windows_failed=lambda *args, **kwargs: None)
    calls = RedisCalls(rt, alerts)  # type: ignore[arg-type]
    failures = [exc, redis.ConnectionError("refused")]

    def step() -> str:
        if failures:
            raise failures.pop(0)
        return "answered"

    try:
        assert asyncio.run(calls.until_answered(step)) == "answered"
    finally:
        calls.close()
    assert failures == [] and rt.waiting is None


def test_other_errors_reach_the_caller() -> None:
    from costplane.streams.pipeline.redis_io import RedisCalls
    from costplane.streams.worker.metrics import WorkerMetrics

    rt = SimpleNamespace(waiting=None, metrics=WorkerMetrics(), now_ms=lambda: 0)
    calls = RedisCalls(rt, SimpleNamespace())  # type: ignore[arg-type]

    def step() -> None:
        raise ValueError("a bug, not an outage")

    try:
        with pytest.raises(ValueError, match="a bug"):
            asyncio.run(calls.until_answered(step))
    finally:
        calls.close()
