"""Per-tenant batching triggers and the memory bound, as pure logic with a fake clock."""

from __future__ import annotations

from costplane.publisher.batching import BatchLimits, TenantBatcher, estimate_size
from costplane.synthetic import generate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _events(tenant: str, n: int, seed: int = 1) -> list:  # type: ignore[type-arg]
    out = []
    for e in generate(n * 8, seed=seed):
        if e.tenant == tenant:
            out.append(e)
        if len(out) == n:
            break
    return out


def test_a_batch_closes_at_max_events() -> None:
    batcher = TenantBatcher(BatchLimits(max_events=10, linger_s=60), Clock())
    events = _events("acme", 25)
    closed = [batcher.add(e) for e in events]
    assert closed.count(True) == 2 and closed[9] and closed[19]
    due = batcher.take_due()
    assert [len(b.events) for b in due] == [10, 10] and batcher.buffered_events == 5
    assert [e for b in due for e in b.events] == events[:20]


def test_a_batch_closes_before_it_passes_max_bytes() -> None:
    events = _events("acme", 30)
    limit = sum(estimate_size(e) for e in events[:10]) + 1
    batcher = TenantBatcher(BatchLimits(max_events=1000, max_bytes=limit, linger_s=60), Clock())
    for e in events:
        batcher.add(e)
    due = batcher.take_due(force=True)
    assert all(b.size <= limit for b in due) and len(due) >= 3
    assert [e for b in due for e in b.events] == events


def test_linger_releases_a_small_batch_only_when_due() -> None:
    clock = Clock()
    batcher = TenantBatcher(BatchLimits(max_events=100, linger_s=0.020), clock)
    (event,) = _events("acme", 1)
    batcher.add(event)
    assert batcher.take_due() == [] and batcher.next_deadline() == 1000.020
    clock.now += 0.021
    (batch,) = batcher.take_due()
    assert batch.events == [event] and batcher.next_deadline() is None and batcher.buffered_bytes == 0


def test_batches_never_mix_tenants() -> None:
    batcher = TenantBatcher(BatchLimits(max_events=7, linger_s=60), Clock())
    events = list(generate(300, seed=5))
    for e in events:
        batcher.add(e)
    due = batcher.take_due(force=True)
    assert all({e.tenant for e in b.events} == {b.tenant} for b in due)
    assert sorted(e.event_id for b in due for e in b.events) == sorted(e.event_id for e in events)
    assert batcher.buffered_events == 0


def test_over_limit_and_take_oldest() -> None:
    batcher = TenantBatcher(BatchLimits(max_events=5, linger_s=60, max_buffered_events=12), Clock())
    events = _events("acme", 12)
    for e in events[:11]:
        batcher.add(e)
    assert not batcher.over_limit
    batcher.add(events[11])
    assert batcher.over_limit
    (oldest,) = batcher.take_oldest()
    assert oldest.events == events[:5] and not batcher.over_limit
    # With no closed batch left, the biggest open one goes.
    batcher.take_due()  # the second closed batch
    (rest,) = batcher.take_oldest()
    assert rest.events == events[10:] and batcher.buffered_events == 0


def test_attributes_count_towards_the_size_estimate() -> None:
    (event,) = _events("acme", 1)
    plain = estimate_size(event)
    event.attributes = {"trace": "x" * 1000}
    assert estimate_size(event) >= plain + 1000


def test_many_open_tenants_are_released_oldest_first_and_only_when_due() -> None:
    clock = Clock()
    batcher = TenantBatcher(BatchLimits(max_events=100, linger_s=1.0), clock)
    (event,) = _events("acme", 1)
    for i in range(500):  # one small open batch per tenant, opened 10 ms apart
        batcher.add_encoded(f"t{i}", event, 100)
        clock.now += 0.010
    assert batcher.next_deadline() == 1001.0
    clock.now = 1000.0 + 1.0 + 0.0995  # t0 … t9 have lingered for a second, t10 not quite
    due = batcher.take_due()
    assert [b.tenant for b in due] == [f"t{i}" for i in range(10)] and batcher.buffered_events == 490
    batcher.add_encoded("t0", event, 100)  # t0's next batch opens now: it is the youngest
    assert [b.tenant for b in batcher.take_due(force=True)][-2:] == ["t499", "t0"]
    assert batcher.next_deadline() is None and batcher.buffered_bytes == 0
