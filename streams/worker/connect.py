"""The worker's Redis, built in one place from ``RedisSettings``: its budget store, window backend and the client
the DLQ fence and alert state share — on one Redis or, with ``COSTPLANE_REDIS_CLUSTER=true``, on a Redis Cluster
(one :class:`~redis.cluster.RedisCluster` client, routing each command by its key's slot)."""

from __future__ import annotations

from dataclasses import dataclass

from costplane.config import RedisSettings
from costplane.enforcers.connect import open_client
from costplane.enforcers.keys import KeyLayout
from costplane.enforcers.store import Client, RedisBudgetStore
from costplane.streams.worker.windowstore import RedisWindowBackend, WindowKeys

#: The worker's socket timeout: a batch's commit carries thousands of arguments, unlike a guard's call.
WORKER_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class WorkerRedis:
    """What the stream role keeps in Redis, all on one client."""

    client: Client
    store: RedisBudgetStore
    windows: RedisWindowBackend


def open_worker_redis(settings: RedisSettings, group: str) -> WorkerRedis:
    """The budget store and the window backend of consumer group ``group``, sharing one client."""
    client = open_client(settings, timeout_s=WORKER_TIMEOUT_S, retry=False)  # the stream role backs off itself
    store = RedisBudgetStore(client, KeyLayout(settings.key_prefix))
    return WorkerRedis(client, store, RedisWindowBackend(client, WindowKeys(settings.key_prefix, group)))
