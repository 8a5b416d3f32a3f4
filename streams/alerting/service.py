"""The alerting pipeline as the worker wires it: findings → lifecycle → alerts topic and delivery → dead letters.

The worker owns the I/O: it passes ``publish`` (produce one record to ``<prefix>.alerts``) and ``publish_dead_letter``
(produce to ``<prefix>.alerts.dlq``); this class owns the order of things. Alerts go to the topic first (the
record of truth, what ``costplane alerts tail`` shows), then to the HTTP targets in the background. Lifecycle state
is plain JSON (:meth:`state`), so the worker can keep it in a Faust table, e.g. one entry per tenant.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from costplane.config import AlertSettings
from costplane.streams.alerting.codec import Headers, encode_alert
from costplane.streams.alerting.delivery import (
    AlertDispatcher,
    DeadLetter,
    Target,
    policy_from_settings,
    targets_from_settings,
)
from costplane.streams.alerting.lifecycle import AlertLifecycle, LifecycleConfig
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.core.findings import Finding

Publish = Callable[[bytes, bytes, Headers], None]  # key, value, headers
DEAD_LETTER_SCHEMA = "AlertDeadLetter"


def dead_letter_record(letter: DeadLetter) -> tuple[bytes, bytes, Headers]:
    """Key (tenant), JSON value and headers of a dead-letter record: readable by people and any tool."""
    value = json.dumps(letter.to_json_dict(), sort_keys=True).encode()
    headers: Headers = [
        ("costplane-schema", DEAD_LETTER_SCHEMA.encode()),
        ("costplane-schema-version", b"1"),
        ("costplane-dlq-reason", letter.reason.encode()),
        ("costplane-target", letter.target.encode()),
    ]
    return letter.alert.tenant.encode(), value, headers


class AlertService:
    """One per worker process (or per tenant partition): ``await start()``, ``observe(...)`` per evaluation."""

    def __init__(
        self,
        settings: AlertSettings,
        publish: Publish,
        publish_dead_letter: Publish,
        *,
        state: dict[str, dict[str, Any]] | None = None,
        targets: list[Target] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.lifecycle = AlertLifecycle.from_state(state or {}, LifecycleConfig.from_settings(settings))
        self._publish = publish
        self._publish_dead_letter = publish_dead_letter
        self.dispatcher = AlertDispatcher(
            targets if targets is not None else targets_from_settings(settings),
            self._dead_letter,
            policy=policy_from_settings(settings),
            queue_size=settings.queue_size,
            client=client,
        )

    async def start(self) -> None:
        await self.dispatcher.start()

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        await self.dispatcher.stop(drain_timeout_s)

    def observe(self, findings: Iterable[Finding], now_ms: int) -> list[AlertEvent]:
        """Run the lifecycle, publish every event to the alerts topic, queue it for delivery; never blocks."""
        return self.emit(self.lifecycle.observe(findings, now_ms))

    def emit(self, events: list[AlertEvent]) -> list[AlertEvent]:
        """Publish lifecycle events to the alerts topic and queue them for delivery, in order (any lifecycle's)."""
        for event in events:
            value, headers = encode_alert(event)
            self._publish(event.tenant.encode(), value, headers)
            self.dispatcher.submit(event)
        return events

    def state(self) -> dict[str, dict[str, Any]]:
        return self.lifecycle.state()

    def _dead_letter(self, letter: DeadLetter) -> None:
        self._publish_dead_letter(*dead_letter_record(letter))
