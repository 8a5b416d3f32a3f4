"""The guard's own connections: settles not waited for yet applied in order, bounded, and safe to lose a socket."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from costplane.config import RedisSettings
from costplane.enforcers.resp import bulks
from costplane.enforcers.transport import Lanes

pytestmark = pytest.mark.redis


def cmd(*parts: str | int) -> bytes:
    return b"*%d\r\n" % len(parts) + bulks(parts)


@pytest.fixture
def client(redis_settings: RedisSettings) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_settings.url.get_secret_value())
    yield c
    for key in c.scan_iter(f"{redis_settings.key_prefix}:*", count=10_000):
        c.delete(key)
    c.close()


def test_a_command_sent_after_unwaited_ones_sees_them_applied(
    client: redis.Redis, redis_settings: RedisSettings
) -> None:
    lanes = Lanes(client.connection_pool)
    key = f"{redis_settings.key_prefix}:n"
    for _ in range(10):
        lanes.send_later(cmd("INCR", key))
    # One connection runs its commands in order: the GET follows the ten INCRs, whose replies it reads first.
    assert lanes.roundtrip(cmd("GET", key)) == b"10"
    assert lanes.roundtrip(cmd("INCR", key)) == 11  # the ten replies were consumed, not taken as this one's


def test_replies_owed_stay_bounded_and_flush_reads_them(client: redis.Redis, redis_settings: RedisSettings) -> None:
    lanes = Lanes(client.connection_pool, max_unread=8)
    key = f"{redis_settings.key_prefix}:n"
    for _ in range(100):
        lanes.send_later(cmd("INCR", key))
        assert all(len(lane.unread) <= 8 for lane in lanes._free)
    lanes.flush()
    assert all(not lane.unread for lane in lanes._free)
    assert client.get(key) == b"100"


def test_an_error_reply_to_an_unwaited_command_keeps_the_connection_in_step(
    client: redis.Redis, redis_settings: RedisSettings
) -> None:
    lanes = Lanes(client.connection_pool)
    text, number = f"{redis_settings.key_prefix}:s", f"{redis_settings.key_prefix}:n"
    client.set(text, "not a number")
    lanes.send_later(cmd("INCR", text))  # refused by Redis: logged, not raised into a later call
    lanes.send_later(cmd("INCR", number))
    assert lanes.roundtrip(cmd("GET", number)) == b"1"
    with pytest.raises(redis.ResponseError):
        lanes.roundtrip(cmd("INCR", text))
    assert lanes.roundtrip(cmd("PING")) == b"PONG"


def test_a_killed_connection_fails_one_call_then_a_new_one_serves(client: redis.Redis) -> None:
    lanes = Lanes(client.connection_pool)
    own_id = lanes.roundtrip(cmd("CLIENT", "ID"))
    client.client_kill_filter(_id=own_id)
    with pytest.raises(redis.ConnectionError):
        lanes.roundtrip(cmd("PING"))
    assert lanes.roundtrip(cmd("CLIENT", "ID")) != own_id
    assert lanes.roundtrip(cmd("PING")) == b"PONG"


def test_a_forked_child_opens_its_own_connection(client: redis.Redis) -> None:
    lanes = Lanes(client.connection_pool)
    parent_id = lanes.roundtrip(cmd("CLIENT", "ID"))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            child_id = lanes.roundtrip(cmd("CLIENT", "ID"))
            os.write(write, b"%d" % child_id)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as inp:
        child_id = int(inp.read() or b"0")
    os.waitpid(pid, 0)
    assert child_id and child_id != parent_id
    assert lanes.roundtrip(cmd("CLIENT", "ID")) == parent_id  # the parent's connection was left alone


def test_the_guards_settle_is_written_not_waited_for(client: redis.Redis, redis_settings: RedisSettings) -> None:
    from costplane.budgets import Budget
    from costplane.enforcers import BudgetGuard, RedisBudgetStore

    store = RedisBudgetStore.from_url(
        redis_settings.url.get_secret_value(), prefix=redis_settings.key_prefix, timeout_s=1.0
    )
    store.publish_budgets("acme", [Budget.from_cli("day", scope="tenant=acme", limit_tokens=1000)])
    guard = BudgetGuard(store, decision_cache_s=0.0)
    r = guard.reserve({"tenant": "acme"}, provider="openai", model="gpt-4o-mini", prompt_tokens=100, max_tokens=100)
    r.settle({"input_tokens": 100, "output_tokens": 20})
    assert store._lanes is not None and [len(lane.unread) for lane in store._lanes._free] == [1]
    guard.flush()
    assert [len(lane.unread) for lane in store._lanes._free] == [0]
    counter = store.client.hgetall(store.keys.spent("acme", "day", "tenant=acme"))
    assert sum(int(v) for f, v in counter.items() if f.isdigit()) == 120
