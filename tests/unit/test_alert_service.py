"""AlertService: findings reach the alerts topic first and the receivers after; failures become DLQ records."""

from __future__ import annotations

import asyncio
import json

import httpx
from pydantic import SecretStr

from costplane.config import AlertSettings, load_settings
from costplane.streams.alerting.codec import Headers, decode_alert
from costplane.streams.alerting.delivery import build_targets
from costplane.streams.alerting.service import AlertService
from costplane.streams.core.findings import Finding

MIN = 60_000


def finding(active: bool, t: int) -> Finding:
    return Finding(
        kind="unpriced_model",
        dedup_key="unpriced_model:acme:mystery",
        tenant="acme",
        active=active,
        severity="warning",
        summary="mystery-model has no price",
        window_start_ms=t - MIN,
        window_end_ms=t,
        runbook="docs/runbook.md#unpriced-model",
    )


def test_topic_gets_every_event_and_failed_deliveries_become_dead_letter_records() -> None:
    topic: list[tuple[bytes, bytes, Headers]] = []
    dlq: list[tuple[bytes, bytes, Headers]] = []
    settings = load_settings(AlertSettings, resolve_after_s=0, cooldown_s=0, retries=1, backoff_base_s=0.001)

    async def go() -> list[str]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))) as client:
            service = AlertService(
                settings,
                lambda *r: topic.append(r),
                lambda *r: dlq.append(r),
                client=client,
                targets=build_targets(webhook_urls=[SecretStr("https://hooks.test/secret-path")]),
            )
            await service.start()
            actions: list[str] = [
                e.action for t in (0, MIN, 2 * MIN) for e in service.observe([finding(t < MIN, t)], t)
            ]
            restored = AlertService(settings, lambda *r: None, lambda *r: None, state=service.state(), targets=[])
            assert restored.lifecycle.open_incidents() == []
            await service.stop()
            return actions

    assert asyncio.run(go()) == ["trigger", "resolve"]
    assert [decode_alert(value, headers).action for _, value, headers in topic] == ["trigger", "resolve"]
    assert all(key == b"acme" for key, _, _ in topic)
    records = [json.loads(value) for _, value, _ in dlq]
    assert [(r["target"], r["reason"], r["alert"]["action"]) for r in records] == [
        ("webhook-0", "http_status", "trigger"),
        ("webhook-0", "http_status", "resolve"),
    ]
    assert dict(dlq[0][2])["costplane-schema"] == b"AlertDeadLetter"
    assert b"secret-path" not in b"".join(value for _, value, _ in dlq)
