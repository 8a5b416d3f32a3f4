"""The guard's and the worker's Redis clients and stores from ``RedisSettings``: ``COSTPLANE_REDIS_URL`` names a
single server, or with ``COSTPLANE_REDIS_CLUSTER=true`` one seed node of a Redis Cluster (the client itself is
built by :func:`costplane.enforcers.store.redis_client`, the one place a URL becomes a client)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from costplane.config import RedisSettings
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.store import REDIS_ERRORS, AsyncRedisBudgetStore, Client, RedisBudgetStore, redis_client


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
    keys = KeyLayout(settings.key_prefix)

    def build() -> RedisBudgetStore:
        return RedisBudgetStore(open_client(settings, timeout_s=timeout, retry=retry), keys)

    if not settings.cluster:
        return build()  # a single-server client connects on first use anyway
    try:
        return build()
    except REDIS_ERRORS:  # a cluster client connects as it is built: no node answers yet
        return cast(RedisBudgetStore, _BuiltOnFirstUse(build, keys))


class _BuiltOnFirstUse:
    """A cluster store whose client could not be built yet (no seed node answered): every call tries again, so
    the error reaches the guard inside a call, where its failure policy answers, instead of raising into the app
    while the guard is built."""

    def __init__(self, build: Callable[[], RedisBudgetStore], keys: KeyLayout) -> None:
        self._build, self.keys = build, keys
        self._store: RedisBudgetStore | None = None

    def __getattr__(self, name: str) -> Any:
        if self._store is None:
            self._store = self._build()
        return getattr(self._store, name)


def open_async_store(settings: RedisSettings) -> AsyncRedisBudgetStore:
    """:func:`open_store` for the asyncio guard."""
    return AsyncRedisBudgetStore.from_url(
        settings.url.get_secret_value(),
        prefix=settings.key_prefix,
        timeout_s=settings.timeout_ms / 1000,
        cluster=settings.cluster,
    )
