"""Detectors feeding the alert lifecycle the way the worker does (evaluate every 10 s of simulated time): a synthetic
retry storm and a synthetic spike each give exactly one trigger and one resolve per incident key, and nothing else
pages."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from costplane.publisher.event import UsageEvent
from costplane.streams.alerting.lifecycle import AlertLifecycle
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors import MINUTE_MS, Detectors
from costplane.synthetic import Incident, TrafficShape, generate

T0 = 1_767_225_600_000
NANOS_PER_TOKEN = {
    "gpt-4o-mini": 150,
    "gpt-4o": 2_500,
    "claude-haiku-4-5": 800,
    "claude-sonnet-4-5": 3_000,
    "text-embedding-3-small": 20,
}


def price(events: Iterable[UsageEvent]) -> Iterator[PricedEvent]:
    for e in events:
        per = NANOS_PER_TOKEN.get(e.model, 1_000)  # a renamed synthetic model still gets a price
        yield PricedEvent(e, per * (e.input_tokens + e.output_tokens) + per // 10 * e.cached_input_tokens, "test")


def test_storm_and_spike_page_once_and_resolve_once() -> None:
    storm = Incident("retry_storm", "acme", T0 + 15 * MINUTE_MS, T0 + 18 * MINUTE_MS, feature="chat", intensity=0.4)
    spike = Incident("spike", "globex", T0 + 15 * MINUTE_MS, T0 + 18 * MINUTE_MS, feature="chat", intensity=0.5)
    events = list(
        price(
            generate(35 * 60 * 30, seed=5, start_ms=T0, rate_per_s=30.0, shape=TrafficShape(incidents=[storm, spike]))
        )
    )
    det, life = Detectors(), AlertLifecycle()
    actions: Counter[tuple[str, str]] = Counter()
    i = 0
    for now in range(T0 + 10_000, T0 + 45 * MINUTE_MS, 10_000):
        batch = []
        while i < len(events) and events[i].event.occurred_at < now:
            batch.append(events[i])
            i += 1
        det.observe(batch)
        for alert in life.observe(det.evaluate(now), now):
            if not alert.escalated:
                actions[(alert.dedup_key, alert.action)] += 1
    keys = {k for k, _ in actions}
    assert keys, "nothing paged"
    assert all(actions[(k, "trigger")] == 1 and actions[(k, "resolve")] == 1 for k in keys), actions
    assert {k.split("|")[0] for k in keys} <= {"retry_storm", "cost_spike", "token_spike"}
    assert any(k.startswith("retry_storm|tenant=acme|feature=chat") for k in keys)
    assert any(k.startswith("cost_spike|tenant=globex|feature=chat") for k in keys)
    assert all("tenant=initech" not in k for k in keys)
    assert life.open_incidents() == []
