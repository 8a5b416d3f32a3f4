"""Building Redis clients from settings: the cluster switch, and cluster failures seen as Redis errors."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import RedisClusterException, SlotNotCoveredError

from costplane.config import RedisSettings, load_settings
from costplane.enforcers.connect import cluster_failures_as_redis_errors, open_client, open_store


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
def test_cluster_failures_become_connection_errors(exc: Exception) -> None:
    with pytest.raises(redis.ConnectionError, match="redis cluster") as raised, cluster_failures_as_redis_errors():
        raise exc
    assert raised.value.__cause__ is exc


def test_other_errors_pass_unchanged() -> None:
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"), cluster_failures_as_redis_errors():
        raise redis.ResponseError("WRONGTYPE")
