"""Deliver alerts over HTTP without ever holding up the worker: per-target queues, retries, dead letters.

* :func:`send_with_retries` — one alert to one target: POST, retry 408/425/429/5xx and transport errors with
  exponential backoff and jitter (sleep and randomness injected), honour ``Retry-After`` (seconds or HTTP date,
  capped), give up after ``max_attempts`` and return a :class:`DeadLetter`. Other 4xx answers and payloads that
  fail validation are dead letters at once: repeating them cannot succeed.
* :class:`AlertDispatcher` — a bounded queue and a background task per target. ``submit`` never blocks: a full
  queue turns the alert into a dead letter for that target. Each target's queue is ordered, so a resolve never
  overtakes its trigger, and a slow Slack never delays PagerDuty.

Secrets: targets hold URLs as ``SecretStr``; logs carry only the target name and ``scheme://host``; error text is
scrubbed of the URL; dead letters carry the alert, never the built body (which holds a routing key).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from costplane.config import AlertSettings, ConfigError
from costplane.logging import get_logger
from costplane.streams.alerting.model import AlertEvent, alert_to_json_dict, severity_rank
from costplane.streams.alerting.pagerduty import pagerduty_event, validate_pagerduty_event
from costplane.streams.alerting.routing import Routing, RoutingError, load_routing
from costplane.streams.alerting.slack import slack_message
from costplane.streams.alerting.webhook import webhook_body
from costplane.streams.core.findings import Severity

log = get_logger("costplane.alerts.delivery")

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))
Sleep = Callable[[float], Awaitable[None]]
ClockMs = Callable[[], int]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def redact_url(url: str) -> str:
    """``https://hooks.slack.com/services/T/B/secret`` → ``https://hooks.slack.com/…``: safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one delivery. Defaults give up after about a minute of failures."""

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0
    timeout_s: float = 5.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay after failed attempt ``attempt`` (1-based): exponential, capped, "equal jitter" (½ fixed, ½ random).

        Half fixed keeps a floor so a flapping receiver is not hammered; half random spreads many workers apart.
        """
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return float(ceiling / 2 + rng.uniform(0, ceiling / 2))


def retry_after_seconds(value: str | None, now_ms: int) -> float | None:
    """A ``Retry-After`` header as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_ms / 1000)


@dataclass(frozen=True, slots=True)
class Target:
    """One delivery destination: a name for logs, the secret URL, and how to build (and check) the body."""

    name: str
    url: SecretStr
    build: Callable[[AlertEvent], dict[str, Any]]
    validate: Callable[[dict[str, Any]], list[str]] | None = None
    min_severity: Severity = "info"
    headers: dict[str, str] = field(default_factory=dict)
    #: A routed destination's rule (``routing.py``): None = every alert its minimum severity lets through.
    route: Callable[[AlertEvent], bool] | None = None

    def wants(self, event: AlertEvent) -> bool:
        """Severity routing; a resolve carries the incident's top severity, so it goes wherever a trigger went."""
        return severity_rank(event.severity) >= severity_rank(self.min_severity) and (
            self.route is None or self.route(event)
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An alert one target never received. The worker publishes these (e.g. to ``<prefix>.alerts.dlq``)."""

    target: str
    alert: AlertEvent
    reason: str  # invalid_payload | http_status | transport | queue_full | stopped
    error: str
    attempts: int
    last_status: int | None
    failed_at_ms: int

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "reason": self.reason,
            "error": self.error,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "failed_at": self.failed_at_ms,
            "alert": alert_to_json_dict(self.alert),
        }


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    attempts: int
    status: int | None
    dead_letter: DeadLetter | None = None


def _scrub(text: str, target: Target) -> str:
    """Remove the target's URL (and its path and query on their own, which carry the tokens) from ``text``."""
    secret = target.url.get_secret_value()
    text = text.replace(secret, redact_url(secret))
    parts = urlsplit(secret)
    for piece in (parts.path, parts.query):
        if len(piece) > 1:
            text = text.replace(piece, "…")
    return text[:500]


async def send_with_retries(
    client: httpx.AsyncClient,
    target: Target,
    event: AlertEvent,
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    clock_ms: ClockMs = _wall_ms,
) -> DeliveryResult:
    """Deliver ``event`` to ``target``; never raises for delivery problems (they come back as a dead letter)."""
    rng = rng or random.Random()
    url = target.url.get_secret_value()
    where = {"target": target.name, "host": redact_url(url), "alert_id": event.alert_id, "action": event.action}

    def dead(reason: str, error: str, attempts: int, status: int | None) -> DeliveryResult:
        letter = DeadLetter(target.name, event, reason, _scrub(error, target), attempts, status, clock_ms())
        log.warning("alert_dead_letter", **where, reason=reason, attempts=attempts, status=status, error=letter.error)
        return DeliveryResult(False, attempts, status, letter)

    try:
        body = target.build(event)
    except (ValueError, KeyError, TypeError) as exc:
        return dead("invalid_payload", f"cannot build the body: {exc}", 0, None)
    problems = target.validate(body) if target.validate else []
    if problems:
        return dead("invalid_payload", "; ".join(problems), 0, None)
    status: int | None = None
    for attempt in range(1, policy.max_attempts + 1):
        retry_after: float | None = None
        try:
            response = await client.post(
                url, json=body, headers=target.headers, timeout=httpx.Timeout(policy.timeout_s)
            )
        except httpx.HTTPError as exc:  # transport trouble: connect, read, timeouts, protocol
            status, error = None, f"{type(exc).__name__}: {exc}"
        else:
            status = response.status_code
            if 200 <= status < 300:
                log.info("alert_delivered", **where, attempts=attempt, status=status)
                return DeliveryResult(True, attempt, status)
            error = f"HTTP {status}: {response.text[:200]}"
            if status not in RETRYABLE_STATUS:
                return dead("http_status", error, attempt, status)
            retry_after = retry_after_seconds(response.headers.get("retry-after"), clock_ms())
        if attempt == policy.max_attempts:
            return dead("http_status" if status is not None else "transport", error, attempt, status)
        delay = policy.backoff(attempt, rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, policy.max_retry_after_s))
        log.info(
            "alert_delivery_retry",
            **where,
            attempt=attempt,
            status=status,
            delay_s=round(delay, 3),
            error=_scrub(error, target),
        )
        await sleep(delay)
    raise AssertionError("unreachable: the loop returns on its last attempt")


DeadLetterCallback = Callable[[DeadLetter], None]


class AlertDispatcher:
    """Background delivery to every target; the worker calls :meth:`submit` and moves on.

    Use inside a running event loop: ``await start()``, ``submit(event)`` per alert, ``await stop()`` at
    shutdown (drains for up to ``drain_timeout_s``, then dead-letters what is left with reason ``stopped``).
    """

    def __init__(
        self,
        targets: Sequence[Target],
        on_dead_letter: DeadLetterCallback,
        *,
        policy: RetryPolicy | None = None,
        queue_size: int = 1000,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        clock_ms: ClockMs = _wall_ms,
    ) -> None:
        self.targets = list(targets)
        self.policy = policy or RetryPolicy()
        self._on_dead_letter = on_dead_letter
        self._queue_size = queue_size
        self._client = client
        self._owns_client = client is None
        self._sleep, self._rng, self._clock_ms = sleep, rng or random.Random(), clock_ms
        self._queues: dict[str, asyncio.Queue[AlertEvent]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False  # not "tasks exist": with no target configured there are none, and that is fine
        self.delivered = 0
        self.dead_lettered = 0

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        for target in self.targets:
            queue: asyncio.Queue[AlertEvent] = asyncio.Queue(maxsize=self._queue_size)
            self._queues[target.name] = queue
            self._tasks.append(asyncio.create_task(self._run(target, queue), name=f"alerts-{target.name}"))

    def submit(self, event: AlertEvent) -> int:
        """Queue ``event`` for every target that wants it; returns how many queued. Never blocks, never raises."""
        if not self._started:
            raise RuntimeError("AlertDispatcher.start() was not awaited")
        queued = 0
        for target in self.targets:
            if not target.wants(event):
                continue
            try:
                self._queues[target.name].put_nowait(event)
                queued += 1
            except asyncio.QueueFull:
                self._dead(
                    DeadLetter(
                        target.name,
                        event,
                        "queue_full",
                        f"delivery queue full ({self._queue_size})",
                        0,
                        None,
                        self._clock_ms(),
                    )
                )
        return queued

    def pending(self) -> int:
        return sum(q.qsize() for q in self._queues.values())

    async def drain(self) -> None:
        """Wait until every queued alert is delivered or dead-lettered."""
        await asyncio.gather(*(q.join() for q in self._queues.values()))

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), drain_timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name, queue in self._queues.items():
            while not queue.empty():
                event = queue.get_nowait()
                self._dead(
                    DeadLetter(name, event, "stopped", "dispatcher stopped before delivery", 0, None, self._clock_ms())
                )
        self._tasks.clear()
        self._started = False
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _dead(self, letter: DeadLetter) -> None:
        self.dead_lettered += 1
        try:
            self._on_dead_letter(letter)
        except Exception as exc:  # noqa: BLE001 - a broken callback must not kill delivery; it is logged
            log.error("alert_dead_letter_callback_failed", target=letter.target, error=f"{type(exc).__name__}: {exc}")

    async def _run(self, target: Target, queue: asyncio.Queue[AlertEvent]) -> None:
        assert self._client is not None
        while True:
            event = await queue.get()
            try:
                result = await send_with_retries(
                    self._client, target, event, self.policy, sleep=self._sleep, rng=self._rng, clock_ms=self._clock_ms
                )
                if result.ok:
                    self.delivered += 1
                elif result.dead_letter is not None:
                    self._dead(result.dead_letter)
            except asyncio.CancelledError:
                self._dead(
                    DeadLetter(
                        target.name, event, "stopped", "dispatcher stopped during delivery", 0, None, self._clock_ms()
                    )
                )
                raise
            except Exception as exc:  # noqa: BLE001 - one bad alert must not stop this target's queue
                self._dead(
                    DeadLetter(
                        target.name,
                        event,
                        "internal",
                        _scrub(f"{type(exc).__name__}: {exc}", target),
                        0,
                        None,
                        self._clock_ms(),
                    )
                )
            finally:
                queue.task_done()


def build_targets(
    *,
    slack_webhook_url: SecretStr | None = None,
    slack_min_severity: Severity = "info",
    pagerduty_routing_key: SecretStr | None = None,
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue",
    pagerduty_source: str = "costplane",
    pagerduty_min_severity: Severity = "critical",
    webhook_urls: Sequence[SecretStr] = (),
    webhook_min_severity: Severity = "info",
    runbook_base_url: str | None = None,
) -> list[Target]:
    """The targets a configuration asks for (see :func:`targets_from_settings` for ``AlertSettings``)."""
    targets: list[Target] = []
    if slack_webhook_url is not None and slack_webhook_url.get_secret_value():
        targets.append(
            Target(
                "slack",
                slack_webhook_url,
                lambda e: slack_message(e, runbook_base_url),
                min_severity=slack_min_severity,
            )
        )
    if pagerduty_routing_key is not None and pagerduty_routing_key.get_secret_value():
        key = pagerduty_routing_key.get_secret_value()
        targets.append(
            Target(
                "pagerduty",
                SecretStr(pagerduty_url),
                lambda e: pagerduty_event(e, key, source=pagerduty_source, runbook_base_url=runbook_base_url),
                validate=validate_pagerduty_event,
                min_severity=pagerduty_min_severity,
            )
        )
    for i, url in enumerate(webhook_urls):
        targets.append(
            Target(f"webhook-{i}", url, lambda e: webhook_body(e, runbook_base_url), min_severity=webhook_min_severity)
        )
    return targets


def routing_targets(
    routing: Routing,
    *,
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue",
    pagerduty_source: str = "costplane",
    runbook_base_url: str | None = None,
) -> list[Target]:
    """One target per named destination, each taking the alerts its routes send it."""
    targets: list[Target] = []
    for dest in routing.destinations.values():

        def routed(event: AlertEvent, name: str = dest.name) -> bool:
            return name in routing.destinations_for(event)

        if dest.kind == "slack":
            targets.append(
                Target(dest.name, SecretStr(dest.secret), lambda e: slack_message(e, runbook_base_url), route=routed)
            )
        elif dest.kind == "pagerduty":

            def page(event: AlertEvent, key: str = dest.secret) -> dict[str, Any]:
                return pagerduty_event(event, key, source=pagerduty_source, runbook_base_url=runbook_base_url)

            targets.append(
                Target(dest.name, SecretStr(pagerduty_url), page, validate=validate_pagerduty_event, route=routed)
            )
        else:
            targets.append(
                Target(dest.name, SecretStr(dest.secret), lambda e: webhook_body(e, runbook_base_url), route=routed)
            )
    return targets


def routing_from_settings(settings: AlertSettings) -> Routing | None:
    """The routing file's rules, or None; a file that cannot be used is a configuration error (one line)."""
    if settings.routing_file is None:
        return None
    try:
        return load_routing(settings.routing_file)
    except RoutingError as exc:
        raise ConfigError(f"COSTPLANE_ALERTS_ROUTING_FILE: {exc}") from None


def targets_from_settings(settings: AlertSettings) -> list[Target]:
    """The targets ``AlertSettings`` configures (none when nothing is set: alerts still reach the topic)."""
    routing = routing_from_settings(settings)
    routed = (
        routing_targets(
            routing,
            pagerduty_url=settings.pagerduty_url,
            pagerduty_source=settings.pagerduty_source,
            runbook_base_url=settings.runbook_base_url,
        )
        if routing is not None
        else []
    )
    return routed + build_targets(**{name: getattr(settings, name) for name in _TARGET_SETTINGS})


#: The ``AlertSettings`` fields that :func:`build_targets` takes, under the same names.
_TARGET_SETTINGS = (
    "slack_webhook_url",
    "slack_min_severity",
    "pagerduty_routing_key",
    "pagerduty_url",
    "pagerduty_source",
    "pagerduty_min_severity",
    "webhook_urls",
    "webhook_min_severity",
    "runbook_base_url",
)


def policy_from_settings(settings: AlertSettings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.retries + 1,
        base_delay_s=settings.backoff_base_s,
        max_delay_s=settings.backoff_max_s,
        max_retry_after_s=settings.max_retry_after_s,
        timeout_s=settings.timeout_s,
    )
