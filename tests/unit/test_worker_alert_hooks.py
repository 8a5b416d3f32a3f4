"""WorkerAlerts: the worker's hooks → detectors and own conditions → lifecycles → topic records and deliveries.

No broker and no network: the topic is a list, HTTP goes through ``httpx.MockTransport``, state through a dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from costplane.config import AlertSettings, load_settings
from costplane.pricing.catalog import default_catalog
from costplane.publisher.codec import Reject
from costplane.publisher.event import UsageEvent
from costplane.publisher.testing import usage_event
from costplane.streams.alerting.codec import Headers, decode_alert
from costplane.streams.alerting.delivery import build_targets
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.core.spend import Decision
from costplane.streams.detectors import Detectors
from costplane.streams.worker.alerts import WorkerAlerts, reject_tenant
from costplane.streams.worker.metrics import WorkerMetrics
from costplane.streams.worker.windows import Located
from costplane.synthetic import Incident, TrafficShape, generate

S, MIN = 1000, 60_000
T0 = 1_767_225_600_000
MEMBER = "tenant=acme,user=u1"


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


class DictStore:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def load(self, tenants: Any) -> dict[str, dict[str, Any]]:
        return {t: json.loads(json.dumps(self.data[t])) for t in tenants if t in self.data}

    def save(self, states: Any, ttl_ms: int) -> None:
        self.data.update(json.loads(json.dumps(dict(states))))


def make(
    clock: Clock,
    topic: list[tuple[bytes, bytes, Headers]] | None = None,
    *,
    store: DictStore | None = None,
    handler: Callable[[httpx.Request], httpx.Response] | None = None,
    **settings: Any,
) -> WorkerAlerts:
    s = load_settings(AlertSettings, **{"resolve_after_s": 0, "cooldown_s": 60, **settings})
    sink = topic if topic is not None else []
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler)) if handler else None
    targets = build_targets(webhook_urls=[SecretStr("https://hooks.test/alerts")]) if handler else []
    return WorkerAlerts(
        s,
        lambda *r: sink.append(r),
        lambda *r: None,
        clock=clock,
        store=store,
        metrics=WorkerMetrics(),
        targets=targets,
        client=client,
    )


def event(tenant: str = "acme", at: int = T0) -> UsageEvent:
    return usage_event(
        event_id=f"e-{tenant}-{at}",
        occurred_at=at,
        tenant=tenant,
        request_id=f"r-{at}",
        input_tokens=10,
        output_tokens=1,
    )


def located(e: UsageEvent, partition: int = 1) -> Located:
    return Located(PricedEvent(e, 1000, "v1"), partition, 0)


def decision(action: str = "block") -> Decision:
    return Decision(
        type="decision",
        action=action,
        tenant="acme",
        budget_id="b1",
        member=MEMBER,
        reason="r",
        spent=1100,
        limit=1000,
        unit="tokens",
        window_start_ms=T0,
        window_end_ms=T0 + 86_400_000,
        until_ms=T0 + 86_400_000,
        version=1,
        at_ms=T0,
        degrade_model="gpt-4o-mini" if action == "degrade" else None,
    )


def lift() -> Decision:
    return Decision(
        type="lift",
        action="block",
        tenant="acme",
        budget_id="b1",
        member=MEMBER,
        reason="budget raised",
        spent=900,
        limit=5000,
        unit="tokens",
        window_start_ms=T0,
        window_end_ms=T0 + 86_400_000,
        until_ms=T0,
        version=2,
        at_ms=T0,
    )


def actions(events: list[AlertEvent], kind: str | None = None) -> list[str]:
    return [e.action for e in events if (kind is None or e.kind == kind) and not e.escalated]


def test_block_then_lift_is_one_trigger_and_one_resolve_on_the_topic_and_at_the_receiver() -> None:
    clock = Clock(T0)
    topic: list[tuple[bytes, bytes, Headers]] = []
    posted: list[dict[str, Any]] = []

    def receive(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(200)

    async def go() -> list[AlertEvent]:
        alerts = make(clock, topic, handler=receive)
        events = await alerts.tick()
        alerts.outcome([decision()], True, clock.ms)
        for _ in range(3):
            clock.ms += S
            events += await alerts.tick()
        alerts.outcome([lift()], True, clock.ms)
        for _ in range(3):
            clock.ms += S
            events += await alerts.tick()
        await alerts.stop()
        return events

    events = asyncio.run(go())
    assert actions(events) == ["trigger", "resolve"]
    assert {e.kind for e in events} == {"budget_blocked"} and events[0].severity == "critical"
    assert [decode_alert(v, h).action for _, v, h in topic] == ["trigger", "resolve"]
    assert [k for k, _, _ in topic] == [b"acme", b"acme"]
    assert [(b["alert"]["kind"], b["alert"]["action"]) for b in posted] == [
        ("budget_blocked", "trigger"),
        ("budget_blocked", "resolve"),
    ]


def test_fail_open_triggers_on_a_failed_commit_and_resolves_after_a_good_one() -> None:
    clock = Clock(T0)

    async def go() -> list[AlertEvent]:
        alerts = make(clock)
        alerts.windows_failed(clock.ms, decisions=1, commits=1)  # the stream waits for Redis and retries
        events = await alerts.tick()
        clock.ms += S
        alerts.outcome([], None, clock.ms)  # nothing written: says nothing about Redis
        events += await alerts.tick()
        alerts.outcome([lift(), decision()], True, clock.ms)
        clock.ms += S
        events += await alerts.tick()
        await alerts.stop()
        return events

    events = asyncio.run(go())
    assert actions(events, "fail_open") == ["trigger", "resolve"]
    assert {e.tenant for e in events if e.kind == "fail_open"} == {"*"}
    assert actions(events, "budget_blocked") == ["trigger"]  # the lift and re-decision keep one block open


def test_dead_letters_of_a_message_count_for_its_tenant() -> None:
    clock = Clock(T0)

    async def go() -> list[AlertEvent]:
        alerts = make(clock, dead_letters_per_minute=10, dead_letter_window_s=5)
        alerts.dead_lettered([], b"acme", 0, clock.ms)  # no rejects: nothing
        for _ in range(5):
            alerts.dead_lettered([Reject("undecodable", "bad bytes")], b"acme", 0, clock.ms)
        events = await alerts.tick()
        clock.ms += 10 * S
        events += await alerts.tick()
        await alerts.stop()
        return events

    events = asyncio.run(go())
    assert [(e.kind, e.tenant, e.action) for e in events] == [
        ("dead_letter_flood", "acme", "trigger"),
        ("dead_letter_flood", "acme", "resolve"),
    ]


def test_reject_tenant_prefers_the_event_then_the_key() -> None:
    assert reject_tenant([Reject("invalid_event", "m", {"tenant": "globex"})], b"acme") == "globex"
    assert reject_tenant([Reject("undecodable", "m")], b"acme") == "acme"
    assert reject_tenant([Reject("undecodable", "m")], None) == "unknown"
    assert reject_tenant([Reject("undecodable", "m")], b"\xff") == "\ufffd"


def priced_minutes(minutes: int, rate: float, shape: TrafficShape) -> Iterator[list[Located]]:
    catalog = default_catalog()
    events = generate(int(minutes * 60 * rate), seed=11, start_ms=T0, rate_per_s=rate, shape=shape)
    for _, batch in itertools.groupby(events, key=lambda e: e.occurred_at // MIN):
        out = []
        for i, e in enumerate(batch):
            cost = catalog.price_event(e)
            out.append(Located(PricedEvent(e, cost.cost_nanos, cost.price_version, cost.unpriced), 0, i))
        yield out


def replay_storm() -> list[AlertEvent]:
    """A backlog (event times an hour before the clock) with a 5-minute retry storm, judged as it arrives."""
    shape = TrafficShape(
        tenants=("acme",),
        incidents=[Incident("retry_storm", "acme", T0 + 12 * MIN, T0 + 17 * MIN, feature="chat", intensity=0.5)],
    )
    clock = Clock(T0 + 90 * MIN)

    async def go() -> list[AlertEvent]:
        alerts = make(clock, resolve_after_s=120, cooldown_s=600)
        events: list[AlertEvent] = []
        for batch in priced_minutes(25, 8.0, shape):
            alerts.observe(batch, clock.ms)
            clock.ms += 100
            events += await alerts.tick()
        for _ in range(3):  # the traffic stops: the clock judges what is left
            clock.ms += 10 * S
            events += await alerts.tick()
        await alerts.stop()
        return events

    return asyncio.run(go())


def test_a_replayed_storm_pages_once_resolves_once_on_event_time_with_the_same_ids_every_time() -> None:
    events = replay_storm()
    storm = [e for e in events if e.kind == "retry_storm" and e.subject.get("feature") == "chat"]
    by_key: dict[str, list[AlertEvent]] = {}
    for e in storm:
        by_key.setdefault(e.dedup_key, []).append(e)
    assert by_key, [e.dedup_key for e in events]
    for key, items in by_key.items():
        assert actions(items) == ["trigger", "resolve"], key
        trigger, resolve = (e for e in items if not e.escalated)
        # Event time: the trigger at the end of a storm minute, the resolve two clear minutes after it ended.
        assert T0 + 12 * MIN < trigger.occurred_at_ms <= T0 + 18 * MIN
        assert T0 + 17 * MIN < resolve.occurred_at_ms <= T0 + 21 * MIN
    assert [e.alert_id for e in replay_storm()] == [e.alert_id for e in events]


def test_evaluate_minutes_groups_what_evaluate_returns() -> None:
    shape = TrafficShape(
        tenants=("acme",),
        incidents=[Incident("retry_storm", "acme", T0 + 2 * MIN, T0 + 4 * MIN, feature="chat", intensity=0.5)],
    )
    a, b = Detectors(), Detectors()
    for batch in priced_minutes(6, 20.0, shape):
        a.observe([x.priced for x in batch])
        b.observe([x.priced for x in batch])
    now = T0 + 7 * MIN + 6 * S
    grouped = a.evaluate_minutes(now)
    assert [m for m, _ in grouped] == [T0 + i * MIN for i in range(7)]  # minute 6 had no traffic: judged as zero
    assert [f for _, fs in grouped for f in fs] == b.evaluate(now)
    assert any(f.kind == "retry_storm" and f.active for m, fs in grouped if m == T0 + 2 * MIN for f in fs)


def test_a_rebalance_hands_the_open_incident_to_the_new_owner_which_resolves_it() -> None:
    clock = Clock(T0)
    store = DictStore()

    async def go() -> tuple[list[AlertEvent], list[AlertEvent], WorkerAlerts]:
        old = make(clock, store=store)
        old.observe([located(event())], clock.ms)
        old.outcome([decision()], True, clock.ms)
        first = await old.tick()
        old.partitions_revoked({1})
        old.partitions_assigned({0})  # acme's partition went elsewhere: forgotten here
        clock.ms += S
        first += await old.tick()
        new = make(clock, store=store)
        new.observe([located(event(at=T0 + S))], clock.ms)
        second = await new.tick()  # loads acme's state: the block is known and open, nothing is sent
        new.outcome([lift()], True, clock.ms)
        clock.ms += S
        second += await new.tick()
        await old.stop()
        await new.stop()
        return first, second, old

    first, second, old = asyncio.run(go())
    assert actions(first) == ["trigger"]
    assert actions(second) == ["resolve"]
    assert old.conditions.tracked()["held"] == 0 and old.own.open_incidents() == []


def test_a_rebalance_that_gives_the_partition_back_keeps_the_tenant() -> None:
    clock = Clock(T0)

    async def go() -> list[AlertEvent]:
        alerts = make(clock)
        alerts.observe([located(event())], clock.ms)
        alerts.outcome([decision()], True, clock.ms)
        events = await alerts.tick()
        alerts.partitions_revoked({0, 1})
        alerts.partitions_assigned({1})
        alerts.outcome([lift()], True, clock.ms)
        clock.ms += S
        events += await alerts.tick()
        await alerts.stop()
        return events

    assert actions(asyncio.run(go())) == ["trigger", "resolve"]


def test_a_failing_evaluation_is_counted_and_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(T0)
    alerts = make(clock)

    def broken(now_ms: int) -> list[Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(alerts.detectors, "evaluate_minutes", broken)

    async def go() -> None:
        await alerts.safe_tick()
        await alerts.stop()

    asyncio.run(go())
    assert alerts.metrics is not None
    assert alerts.metrics.registry.get_sample_value("costplane_worker_alert_errors_total", {"stage": "evaluate"}) == 1


def test_a_failing_state_store_is_counted_and_left_alone_for_a_while() -> None:
    clock = Clock(T0)

    class Down(DictStore):
        calls = 0

        def load(self, tenants: Any) -> dict[str, dict[str, Any]]:
            Down.calls += 1
            raise ConnectionError("redis down")

    async def go() -> WorkerAlerts:
        alerts = make(clock, store=Down())
        alerts.observe([located(event())], clock.ms)
        await alerts.tick()
        clock.ms += S
        await alerts.tick()  # within the retry pause: not called again
        await alerts.stop()
        return alerts

    alerts = asyncio.run(go())
    assert Down.calls == 1
    assert alerts.metrics is not None
    assert alerts.metrics.registry.get_sample_value("costplane_worker_alert_errors_total", {"stage": "state_load"}) == 1


def test_a_pause_in_a_backlog_does_not_close_its_half_filled_minute() -> None:
    def storm_minute(minute: int, first: int, count: int) -> list[PricedEvent]:
        out = []
        for i in range(first, first + count):
            at = T0 + minute * MIN + i * 1000
            e = UsageEvent(
                event_id=f"s{minute}-{i}",
                occurred_at=at,
                tenant="acme",
                provider="openai",
                model="gpt-4o-mini",
                request_id=f"q{minute}-{i // 2}",
                attempt=1 + i % 2,
                status="error" if i % 2 == 0 else "ok",
                input_tokens=100,
                output_tokens=10,
                feature="chat",
            )
            out.append(PricedEvent(e, 1000, "v1"))
        return out

    d = Detectors()
    now = T0 + 60 * MIN  # an hour behind the clock: a backlog
    d.observe([p for m in range(5) for p in storm_minute(m, 0, 2)] + storm_minute(5, 0, 10))
    assert [m for m, _ in d.evaluate_minutes(now)] == [T0 + m * MIN for m in range(5)]
    assert d.evaluate_minutes(now + 20 * S) == []  # paused: minute 5 (10 of its 40 attempts so far) stays open
    d.observe(storm_minute(5, 10, 30) + storm_minute(6, 0, 5))  # the replay moves on into minute 6
    judged = d.evaluate_minutes(now + 25 * S)
    assert [m for m, _ in judged] == [T0 + 5 * MIN]
    storm = [f for f in judged[0][1] if f.kind == "retry_storm"]
    assert [(f.active, f.numbers["attempts"]) for f in storm] == [(True, "40")]
    assert d.evaluate_minutes(now + 50 * S) == []  # within the pause limit again
    assert len(d.evaluate_minutes(now + 60 * S)) > 1  # the backlog is over: the clock judges what is left


def test_after_a_restart_a_lift_before_any_traffic_resolves_the_block_the_last_process_held() -> None:
    clock = Clock(T0)
    store = DictStore()

    async def go() -> tuple[list[AlertEvent], list[AlertEvent]]:
        old = make(clock, store=store)
        old.observe([located(event())], clock.ms)
        old.outcome([decision()], True, clock.ms)
        first = await old.tick()
        await old.stop()  # saves the state
        clock.ms += 10 * S
        new = make(clock, store=store)
        new.outcome([lift()], True, clock.ms)  # the budget was raised while nothing else happened
        clock.ms += S
        second = await new.tick()
        await new.stop()
        return first, second

    first, second = asyncio.run(go())
    assert actions(first) == ["trigger"]
    assert actions(second) == ["resolve"]
    assert second[0].alert_id != first[0].alert_id and second[0].dedup_key == first[0].dedup_key


def test_without_saved_state_a_restarted_worker_ignores_a_lift_it_never_saw_blocked() -> None:
    clock = Clock(T0)

    async def go() -> list[AlertEvent]:
        new = make(clock, store=DictStore())
        new.outcome([lift()], True, clock.ms)
        events = await new.tick()
        await new.stop()
        return events

    assert asyncio.run(go()) == []


def test_an_outcome_worth_alerting_on_wakes_the_evaluation_before_its_interval() -> None:
    clock = Clock(T0)
    topic: list[tuple[bytes, bytes, Headers]] = []

    async def go() -> int:
        alerts = make(clock, topic, evaluate_interval_s=600)  # the interval alone would not evaluate in this test
        loop = asyncio.create_task(alerts.run())
        await asyncio.sleep(0.2)  # the loop is waiting
        alerts.outcome([], None, clock.ms)  # nothing to alert on: no wake
        await asyncio.sleep(0.3)
        before = len(topic)
        alerts.outcome([decision()], True, clock.ms)
        for _ in range(100):
            if topic:
                break
            await asyncio.sleep(0.05)
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await alerts.stop()
        return before

    assert asyncio.run(go()) == 0
    assert [decode_alert(v, h).kind for _, v, h in topic] == ["budget_blocked"]
