"""The stream role's windows over a fenced store: exact counts, redelivery and zombie safe, edge-triggered
decisions, lifts on raise / rollover / deletion that survive a restart, bounded cache (in-memory backend)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis

from costplane.budgets import Budget
from costplane.enforcers.keys import KeyLayout
from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.core.spend import Decision
from costplane.streams.worker.windows import Located, WorkerWindows
from costplane.streams.worker.windowstore import MemoryWindowBackend

DAY0 = 1_795_392_000_000  # a UTC midnight
NOW = DAY0 + 3_600_000
MEMBER = "tenant=acme,user=u1"


def located(
    user: str, tokens: int, offset: int, *, nanos: int = 1000, partition: int = 0, at: int = NOW, tenant: str = "acme"
) -> Located:
    ev = UsageEvent(
        event_id=str(uuid.uuid4()),
        occurred_at=at,
        tenant=tenant,
        provider="openai",
        model="m",
        request_id=str(uuid.uuid4()),
        attempt=1,
        status="ok",
        input_tokens=tokens,
        user_id=user,
    )
    return Located(PricedEvent(ev, nanos, "v1"), partition, offset)


def budget(limit: int = 1000, **kw: object) -> Budget:
    fields: dict[str, object] = {
        "id": "b",
        "scope": {"tenant": "acme", "user": "*"},
        "unit": "tokens",
        "limit": limit,
        "soft": (0.5,),
        "version": 1,
    }
    fields.update(kw)
    return Budget(**fields)  # type: ignore[arg-type]


def windows(backend: MemoryWindowBackend, cache_limit: int = 200_000) -> WorkerWindows:
    return WorkerWindows(backend, backend.keys, KeyLayout("mem"), cache_limit=cache_limit)


def run(w: WorkerWindows, items: list[Located], budgets: list[Budget], now: int = NOW) -> list[Decision]:
    pending = w.count(items, budgets, now)
    assert w.commit(pending).fenced == []
    return pending.decisions


def spent_counter(backend: MemoryWindowBackend, member: str = MEMBER, budget_id: str = "b") -> dict[str, str]:
    return backend.hashes.get(KeyLayout("mem").spent("acme", budget_id, member), {})


def decision_key(member: str = MEMBER) -> str:
    return KeyLayout("mem").decision("acme", "b", member)


def test_counts_per_member_crosses_once_and_sets_the_guard_counter() -> None:
    backend = MemoryWindowBackend()
    w, b = windows(backend), budget()
    out = run(w, [located("u1", 300, 0), located("u1", 300, 1), located("u2", 100, 2)], [b])
    assert [(d.type, d.member, d.threshold) for d in out] == [("threshold", MEMBER, 0.5)]  # 600 ≥ 0.5 × 1000
    out = run(w, [located("u1", 500, 3)], [b])
    assert [(d.type, d.action, d.spent) for d in out] == [("decision", "block", 1100)]
    assert out[0].window_end_ms == DAY0 + 86_400_000
    assert json.loads(backend.strings[decision_key()])["spent"] == 1100
    assert spent_counter(backend) == {str(DAY0): "1100"}  # reconciled to the exact total
    assert run(w, [located("u1", 1, 4)], [b]) == []  # still over: no second decision, no second threshold


def test_redelivered_messages_at_or_below_the_fence_count_nothing() -> None:
    backend = MemoryWindowBackend()
    w, b = windows(backend), budget(limit=10_000)
    batch = [located("u1", 100, 10), located("u1", 200, 11)]
    run(w, batch, [b])
    pending = w.count(batch + [located("u1", 50, 12)], [b], NOW)  # redelivery after a crash before the commit
    assert pending.redelivered == 2 and pending.counted == 1
    w.commit(pending)
    assert spent_counter(backend) == {str(DAY0): "350"}


def test_a_restarted_worker_resumes_from_the_store_exactly() -> None:
    backend = MemoryWindowBackend()
    b = budget(limit=10_000)
    run(windows(backend), [located("u1", 100, 10), located("u1", 200, 11)], [b])
    again = windows(backend)  # a new process: nothing cached, fences and windows read back
    pending = again.count([located("u1", 200, 11), located("u1", 5, 12)], [b], NOW)
    assert (pending.redelivered, pending.counted) == (1, 1)
    again.commit(pending)
    assert spent_counter(backend) == {str(DAY0): "305"}


def test_a_zombie_commit_is_fenced_off_and_writes_nothing() -> None:
    backend = MemoryWindowBackend()
    b = budget(limit=10_000)
    zombie, owner = windows(backend), windows(backend)
    run(zombie, [located("u1", 100, 1)], [b])
    stale = zombie.count([located("u1", 7, 2)], [b], NOW)  # computed, then the partition moved
    run(owner, [located("u1", 40, 2), located("u1", 2, 3)], [b])  # the new owner counts offsets 2-3
    report = zombie.commit(stale)
    assert report.fenced == ["acme"] and report.fenced_partitions == {0}
    assert spent_counter(backend) == {str(DAY0): "142"}
    assert "acme" not in zombie.tenants and zombie.cache == {}  # it reads again before counting anything more


def test_usd_budget_sums_integer_nanos() -> None:
    backend = MemoryWindowBackend()
    w, b = windows(backend), budget(limit=5_000, unit="usd", soft=())
    out = run(w, [located("u1", 1, i, nanos=1_250) for i in range(4)], [b])
    assert [(d.type, d.spent, d.unit) for d in out] == [("decision", 5_000, "usd")]


def test_raising_the_budget_lifts_and_lowering_decides_again() -> None:
    backend = MemoryWindowBackend()
    w, b = windows(backend), budget(limit=1000, soft=())
    run(w, [located("u1", 1100, 0)], [b])
    assert decision_key() in backend.strings
    raised = budget(limit=5000, soft=(), version=2)
    pending = w.reevaluate({"b": raised}, {"b"}, NOW + 1)
    w.commit(pending)
    assert [(d.type, d.reason) for d in pending.decisions] == [("lift", "budget raised")]
    assert decision_key() not in backend.strings
    lowered = budget(limit=100, soft=(), version=3)
    pending = w.reevaluate({"b": lowered}, {"b"}, NOW + 2)
    w.commit(pending)
    assert [(d.type, d.limit) for d in pending.decisions] == [("decision", 100)]


def test_rollover_lift_is_found_after_a_restart_from_the_standing_index() -> None:
    backend = MemoryWindowBackend()
    b = budget(limit=1000)
    run(windows(backend), [located("u1", 1100, 0)], [b])
    restarted = windows(backend)
    restarted.count([located("u9", 1, 1)], [b], NOW)  # any event of the tenant loads its meta
    assert restarted.reevaluate({"b": b}, None, NOW + 60_000).decisions == []  # not due yet
    next_day = DAY0 + 86_400_000 + 1
    pending = restarted.reevaluate({"b": b}, None, next_day)
    restarted.commit(pending)
    assert [(d.type, d.reason) for d in pending.decisions] == [("lift", "window rolled over")]
    assert decision_key() not in backend.strings
    assert restarted.reevaluate({"b": b}, None, next_day + 1000).decisions == []  # lifted once


def test_deleted_budget_lifts_and_drops_the_window() -> None:
    backend = MemoryWindowBackend()
    w, b = windows(backend), budget(limit=1000)
    run(w, [located("u1", 1100, 0)], [b])
    pending = w.reevaluate({}, {"b"}, NOW + 1)
    w.commit(pending)
    assert [(d.type, d.reason) for d in pending.decisions] == [("lift", "budget deleted")]
    assert decision_key() not in backend.strings
    assert backend.keys.window(f"b|{MEMBER}") not in backend.strings
    again = run(w, [located("u1", 10, 1)], [b])  # the same id defined anew starts from nothing
    assert again == [] and spent_counter(backend) == {str(DAY0): "10"}


def test_rolling_hour_counts_buckets_inside_the_window_only() -> None:
    backend = MemoryWindowBackend()
    w, b = windows(backend), budget(limit=1000, period="rolling-1h", soft=())
    run(w, [located("u1", 600, 0, at=NOW - 2 * 3_600_000)], [b])  # two hours ago: outside the window
    assert run(w, [located("u1", 600, 1)], [b]) == []
    out = run(w, [located("u1", 500, 2)], [b])
    assert [(d.type, d.spent) for d in out] == [("decision", 1100)]


def test_events_outside_every_scope_touch_nothing_but_the_fence() -> None:
    backend = MemoryWindowBackend()
    w = windows(backend)
    assert run(w, [located("u1", 100, 0, tenant="other")], [budget()]) == []
    assert [k for k in backend.strings] == []
    assert backend.hashes[backend.keys.meta("other")] == {"o:0": "0"}


def test_the_cache_stays_bounded_and_reads_back_what_it_dropped() -> None:
    backend = MemoryWindowBackend()
    w, b = windows(backend, cache_limit=1000), budget(limit=10**9, soft=())
    for start in range(0, 3000, 500):
        run(w, [located(f"u{start + i}", 1, start + i) for i in range(500)], [b])
        assert len(w.cache) <= 1000
    run(w, [located("u0", 4, 5000)], [b])  # evicted long ago: read back, not restarted from zero
    assert spent_counter(backend, "tenant=acme,user=u0") == {str(DAY0): "5"}


def test_the_cache_drops_the_least_recently_written_keys_first_and_stays_nearly_full() -> None:
    backend = MemoryWindowBackend()
    w, b = windows(backend, cache_limit=1000), budget(limit=10**9, soft=())
    run(w, [located(f"u{i}", 1, i) for i in range(1000)], [b])
    run(w, [located("u0", 1, 1000)], [b])  # written again: now the most recent
    run(w, [located(f"n{i}", 1, 1001 + i) for i in range(50)], [b])
    cached = {k.rsplit("=", 1)[1] for k in w.cache}
    assert "u0" in cached and {f"n{i}" for i in range(50)} <= cached
    assert not {f"u{i}" for i in range(1, 101)} & cached  # the oldest tenth went, not everything
    assert 900 <= len(w.cache) <= 1000 and {f"u{i}" for i in range(101, 1000)} <= cached


def test_taking_partitions_over_loads_their_tenants_so_a_raise_lifts_without_new_traffic() -> None:
    backend = MemoryWindowBackend()
    b = budget(limit=1000, soft=())
    run(windows(backend), [located("u1", 1100, 0, partition=1)], [b])
    run(windows(backend), [located("x", 5, 0, partition=2, tenant="other")], [b])
    successor = windows(backend)
    assert successor.take_over({1}) == 1 and set(successor.tenants) == {"acme"}  # "other" is on partition 2
    assert successor.standing_budgets() == {"b"}
    raised = budget(limit=5000, soft=(), version=2)
    pending = successor.reevaluate({"b": raised}, {"b"}, NOW + 1)
    successor.commit(pending)
    assert [(d.type, d.reason) for d in pending.decisions] == [("lift", "budget raised")]
    assert decision_key() not in backend.strings


def test_send_early_counts_what_the_plain_path_counts_and_holds_back_tenants_with_records() -> None:
    outcomes = []
    for early in (False, True):
        backend = MemoryWindowBackend()
        w = windows(backend)
        items = [located("u1", 300, 0, tenant="acme"), located("u1", 2000, 0, partition=1, tenant="beta")]
        b = budget(scope={"tenant": "*", "user": "*"})
        pending = w.count(items, [b], NOW, send_early=early)
        assert [c.tenant for c in pending.sent] == (["acme"] if early else [])  # beta crossed: its record first
        assert w.commit(pending).fenced == []
        outcomes.append((backend.hashes, backend.strings, backend.registry, [d.type for d in pending.decisions]))
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][3] == ["decision", "threshold"]


def test_an_aborted_early_stream_raises_then_commits_plainly_once() -> None:
    backend = MemoryWindowBackend()
    w = windows(backend)
    pending = w.count([located("u1", 300, 0)], [budget()], NOW, send_early=True)
    assert pending.stream is not None
    pending.stream.abort()
    with pytest.raises(redis.ConnectionError):
        w.commit(pending)
    assert w.commit(pending).fenced == []
    assert spent_counter(backend) == {str(DAY0): "300"}


@pytest.mark.parametrize("user", ["u1", "ü-Ωmega", "日本"])
def test_packed_script_call_is_valid_resp_for_any_text(user: str) -> None:
    """The text frames and the byte path must frame the same command; lengths are in bytes, not characters."""
    from costplane.streams.worker.windowstore import TenantCommit, _packed_eval_bytes

    sha = b"f" * 40
    commit = TenantCommit("acme", "p:{acme}:worker:g", (0, -1, 12))
    state = json.dumps({"b": {"1": [3, 4]}, "u": user})
    commit.set(f"p:{{acme}}:win:g:b|tenant=acme,user={user}", state, 86_400_000)
    packed = commit.wire(sha)
    assert packed == _packed_eval_bytes(sha, *commit.script_args())
    # Parse it back as Redis would: an array of bulk strings.
    head, _, rest = packed.partition(b"\r\n")
    items = []
    for _ in range(int(head[1:])):
        size, _, rest = rest.partition(b"\r\n")
        n = int(size[1:])
        items.append(rest[:n].decode())
        assert rest[n : n + 2] == b"\r\n"
        rest = rest[n + 2 :]
    assert rest == b""
    assert items == [
        "EVALSHA",
        sha.decode(),
        "2",
        "p:{acme}:worker:g",
        f"p:{{acme}}:win:g:b|tenant=acme,user={user}",
        "o:0",
        "",
        "12",
        "S",
        "2",
        state,
        "86400000",
    ]


def test_state_json_is_the_encoders_json_for_every_state_the_core_makes() -> None:
    """The direct formatting of bucket-only states must read back as the same state as the JSON encoder's."""
    import random

    from costplane.streams.core.spend import SpendWindows
    from costplane.streams.worker.windows import state_json

    rng = random.Random(7)
    spend = SpendWindows()
    budgets = [
        budget(limit=rng.choice([10**9, 5000]), period=period, soft=soft)
        for period in ("day", "rolling-1m", "rolling-1h")
        for soft in ((), (0.5,))
    ]
    shapes = {"buckets only": 0, "other": 0}
    for b in budgets:
        state = None
        for step in range(40):
            at = NOW + step * rng.choice([1_000, 7_000, 61_000])
            inc = spend.aggregate(
                [located("u1", rng.randrange(0, 400), step, nanos=rng.randrange(0, 10**6), at=at).priced], [b]
            )
            states, _ = spend.apply(inc, [b], {k: state for k in inc}, at)
            state = next(iter(states.values()))
            text = state_json(state)
            assert json.loads(text) == state
            shapes["buckets only" if state["d"] is None and state["soft"] == [] else "other"] += 1
    assert shapes["buckets only"] > 0 and shapes["other"] > 0  # the direct path and the encoder both ran
    for odd in ({"b": {}, "soft": [0.5], "d": None}, {"b": {"1": [1, 2]}, "soft": [], "d": None, "x": 1}):
        assert json.loads(state_json(odd)) == odd


@pytest.mark.parametrize("user", ["u1", "ü-Ωmega"])
@pytest.mark.parametrize("fence", [None, (3, -1, 17), (0, 5, 9), (1, 9, 9)])
def test_a_commit_framed_as_it_is_built_sends_what_its_script_args_say(user: str, fence: Any) -> None:
    """TenantCommit frames each key and op as it is added; the command it sends must be byte for byte the one
    its script arguments frame in bytes, for every op, a key used twice, any fence, and text that is not ASCII."""
    from costplane.streams.worker.windowstore import TenantCommit, _packed_eval_bytes

    sha = b"e" * 40
    commit = TenantCommit("acme", "p:{acme}:worker:g", fence)
    win = f"p:{{acme}}:win:g:b|tenant=acme,user={user}"
    commit.set(win, json.dumps({"b": {"1": [3, 4]}, "u": user}), 86_400_000)
    commit.counter("p:{acme}:spent:b:x", 1_764_633_600_000, 1750, 0)  # a ttl under 1 ms is sent as 1
    commit.hset("p:{acme}:worker:g", f"s:b|tenant=acme,user={user}", 123, None)
    commit.hset("p:{acme}:worker:g", "f", "v", 5)
    commit.hdel("p:{acme}:worker:g", "s:gone")
    commit.delete(win)
    assert commit.wire(sha) == _packed_eval_bytes(sha, *commit.script_args())
