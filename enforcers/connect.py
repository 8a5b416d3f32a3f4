"""The guard's and the worker's Redis clients and stores from ``RedisSettings``: ``COSTPLANE_REDIS_URL`` names a
single server, or with ``COSTPLANE_REDIS_CLUSTER=true`` one seed node of a Redis Cluster (the client itself is
built by :func:`costplane.enforcers.store.redis_client`, the one place a URL becomes a client)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import RedisClusterException

from costplane.config import RedisSettings
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.store import AsyncRedisBudgetStore, Client, RedisBudgetStore, redis_client


def open_client(settings: RedisSettings, *, timeout_s: float, retry: bool = True) -> Client:
    """A redis-py client for ``settings``: :class:`RedisCluster` (routing each command by its key's slot) when
    ``settings.cluster``. ``retry=False`` gives up at once (the guard: its failure policy decides instead)."""
    url = settings.url.get_secret_value()
    return redis_client(url, timeout_s=timeout_s, cluster=settings.cluster, retry=retry)


def open_store(settings: RedisSettings, *, timeout_s: float | None = None, retry: bool = False) -> RedisBudgetStore:
    """The budget store for ``settings`` (the guard's ``from_settings`` and the worker both build theirs here).

    ``timeout_s`` defaults to the guard's ``COSTPLANE_REDIS_TIMEOUT_MS``; the worker passes its own, longer one.
    """
    timeout = settings.timeout_ms / 1000 if timeout_s is None else timeout_s
    return RedisBudgetStore(open_client(settings, timeout_s=timeout, retry=retry), KeyLayout(settings.key_prefix))


def open_async_store(settings: RedisSettings) -> AsyncRedisBudgetStore:
    """:func:`open_store` for the asyncio guard."""
    return AsyncRedisBudgetStore.from_url(
        settings.url.get_secret_value(),
        prefix=settings.key_prefix,
        timeout_s=settings.timeout_ms / 1000,
        cluster=settings.cluster,
    )


@contextmanager
def cluster_failures_as_redis_errors() -> Iterator[None]:
    """A cluster client's own failures (no reachable node, a slot no node serves) re-raised as
    :class:`redis.ConnectionError`: callers that wait out an unreachable Redis on ``RedisError`` (the worker's
    stream role) then wait out a broken cluster the same way instead of crashing."""
    try:
        yield
    except RedisClusterException as exc:
        raise redis.ConnectionError(f"redis cluster: {exc}") from exc
