"""Synthetic traffic → pricing → detectors → lifecycle → a real HTTP receiver, in Slack and PagerDuty format.

A retry storm on one feature and a spend spike on another, each a few minutes long inside steady traffic, must
arrive at the receiver as exactly one trigger and one resolve per incident key in both formats.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict

import pytest
from pydantic import SecretStr
from test_alert_delivery_http import KEY, Receiver, receiver  # noqa: F401 - the fixture is used by name

from costplane.pricing.catalog import default_catalog
from costplane.streams.alerting.delivery import AlertDispatcher, DeadLetter, RetryPolicy, build_targets
from costplane.streams.alerting.lifecycle import AlertLifecycle, LifecycleConfig
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.alerting.pagerduty import validate_pagerduty_event
from costplane.streams.core.priced import PricedEvent
from costplane.streams.detectors import Detectors
from costplane.synthetic import Incident, TrafficShape, generate

pytestmark = pytest.mark.http

MIN = 60_000
T0 = 1_767_225_600_000
MINUTES = 50
RATE = 20.0  # events per second, all one tenant


def _alerts() -> list[AlertEvent]:
    shape = TrafficShape(
        tenants=("acme",),
        incidents=[
            Incident("retry_storm", "acme", T0 + 20 * MIN, T0 + 25 * MIN, feature="chat", intensity=0.5),
            Incident("spike", "acme", T0 + 30 * MIN, T0 + 34 * MIN, feature="support-agent", intensity=0.5),
        ],
    )
    catalog = default_catalog()
    events = generate(int(MINUTES * 60 * RATE), seed=11, start_ms=T0, rate_per_s=RATE, shape=shape)
    detectors = Detectors()
    lifecycle = AlertLifecycle(LifecycleConfig(resolve_after_ms=2 * MIN, cooldown_ms=10 * MIN))
    alerts: list[AlertEvent] = []
    for minute, batch in itertools.groupby(events, key=lambda e: e.occurred_at // MIN):
        priced = []
        for e in batch:
            cost = catalog.price_event(e)
            priced.append(PricedEvent(e, cost.cost_nanos, cost.price_version, unpriced=cost.unpriced))
        detectors.observe(priced)
        now = (minute + 1) * MIN + 6_000
        alerts += lifecycle.observe(detectors.evaluate(now), now)
    for extra in range(1, 20):  # traffic stops: everything still open must resolve
        now = (T0 // MIN + MINUTES + extra) * MIN
        alerts += lifecycle.observe(detectors.evaluate(now), now)
    return alerts


def test_retry_storm_and_spike_each_page_once_and_resolve_once(receiver: Receiver) -> None:  # noqa: F811
    alerts = _alerts()
    by_key: dict[str, list[str]] = defaultdict(list)
    for a in alerts:
        if not a.escalated:
            by_key[a.dedup_key].append(a.action)
    storm = sorted({a.dedup_key for a in alerts if a.kind == "retry_storm" and a.subject.get("feature") == "chat"})
    spike = sorted(
        {a.dedup_key for a in alerts if a.kind == "cost_spike" and a.subject.get("feature") == "support-agent"}
    )
    assert storm and spike, sorted(by_key)
    for key in storm + spike:
        assert by_key[key] == ["trigger", "resolve"], (key, by_key[key])

    letters: list[DeadLetter] = []

    async def deliver() -> None:
        targets = build_targets(
            slack_webhook_url=SecretStr(receiver.base + "/slack"),
            pagerduty_routing_key=SecretStr(KEY),
            pagerduty_url=receiver.base + "/pd",
            pagerduty_min_severity="info",
        )
        dispatcher = AlertDispatcher(targets, letters.append, policy=RetryPolicy(max_attempts=2, base_delay_s=0.01))
        await dispatcher.start()
        for a in alerts:
            if a.dedup_key in storm + spike:
                dispatcher.submit(a)
        await dispatcher.stop()

    asyncio.run(deliver())
    assert letters == []
    pd = receiver.bodies("/pd")
    assert all(validate_pagerduty_event(b) == [] for b in pd)
    for key in storm + spike:
        assert [
            b["event_action"]
            for b in pd
            if b["dedup_key"] == key and not b.get("payload", {}).get("custom_details", {}).get("escalated")
        ] == ["trigger", "resolve"]
        slack = [b["text"] for b in receiver.bodies("/slack") if f"`{key}`" in str(b["blocks"])]
        assert [t.split("[")[1].split("]")[0] for t in slack if "[ESCALATED]" not in t] == ["TRIGGERED", "RESOLVED"]
