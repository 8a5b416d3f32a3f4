"""RedisStateStore against the real Redis: per-tenant JSON with a TTL; unreadable or foreign values are skipped."""

from __future__ import annotations

import pytest
import redis

from costplane.config import RedisSettings
from costplane.streams.worker.alerts import STATE_VERSION, RedisStateStore

pytestmark = pytest.mark.redis


def test_save_and_load_round_trip_with_expiry_and_bad_values_skipped(redis_settings: RedisSettings) -> None:
    client = redis.Redis.from_url(redis_settings.url.get_secret_value())
    store = RedisStateStore(client, redis_settings.key_prefix)
    states = {
        "acme": {"v": STATE_VERSION, "own": {"k": {"status": "open"}}},
        "globex": {"v": STATE_VERSION, "baselines": {"subjects": [[["globex", "chat"], 5, 1, 10, 0]]}},
    }
    store.save(states, ttl_ms=60_000)
    assert store.key("acme") == f"{redis_settings.key_prefix}:{{acme}}:alerts:state"
    assert 0 < int(client.pttl(store.key("acme"))) <= 60_000
    client.set(store.key("broken"), b"{not json")
    client.set(store.key("future"), b'{"v": 99}')
    assert store.load(["acme", "globex", "broken", "future", "absent"]) == states
    assert store.load([]) == {}
    store.save({}, ttl_ms=1000)  # nothing to write: no round trip, no error
