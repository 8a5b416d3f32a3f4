"""Delivery: retries with backoff and Retry-After, dead letters, a queue that never blocks, and no leaked secrets."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from costplane.config import AlertSettings, load_settings
from costplane.streams.alerting.delivery import (
    AlertDispatcher,
    DeadLetter,
    RetryPolicy,
    Target,
    build_targets,
    policy_from_settings,
    redact_url,
    retry_after_seconds,
    send_with_retries,
    targets_from_settings,
)
from costplane.streams.alerting.model import AlertEvent
from costplane.streams.alerting.webhook import webhook_body

SLACK_URL = "https://hooks.slack.com/services/T000/B000/SeCrEtToKeN"
KEY = "R0UT1NGK3Y0123456789abcdefABCDEF"
EVENT = AlertEvent(
    alert_id="a1",
    dedup_key="cost_spike:acme:chat",
    kind="cost_spike",
    action="trigger",
    severity="critical",
    tenant="acme",
    summary="spend 3.1x baseline",
    window_start_ms=1_790_000_000_000,
    window_end_ms=1_790_000_060_000,
    occurred_at_ms=1_790_000_061_000,
)
NOW_MS = 1_790_000_100_000


class Script:
    """A fake receiver: answers from a list of (status, headers) or exceptions, recording every request."""

    def __init__(self, *answers: int | tuple[int, dict[str, str]] | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return httpx.Response(status, headers=headers, text="ok" if status < 300 else "nope")

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def webhook_target(url: str = SLACK_URL) -> Target:
    return Target("webhook-0", SecretStr(url), webhook_body)


def deliver(
    script: Script, target: Target | None = None, policy: RetryPolicy | None = None, event: AlertEvent = EVENT
) -> tuple[Any, list[float]]:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(script)) as client:
            return await send_with_retries(
                client,
                target or webhook_target(),
                event,
                policy or RetryPolicy(),
                sleep=sleep,
                rng=random.Random(7),
                clock_ms=lambda: NOW_MS,
            )

    return asyncio.run(go()), slept


def test_first_try_success() -> None:
    script = Script(200)
    result, slept = deliver(script)
    assert (result.ok, result.attempts, slept) == (True, 1, [])
    assert script.bodies()[0]["alert"]["alert_id"] == "a1"


def test_500_then_200_is_retried_with_backoff() -> None:
    script = Script(500, 502, 200)
    result, slept = deliver(script, policy=RetryPolicy(base_delay_s=1.0))
    assert (result.ok, result.attempts, len(script.requests)) == (True, 3, 3)
    assert 0.5 <= slept[0] <= 1.0 and 1.0 <= slept[1] <= 2.0  # equal jitter over 1 s, then 2 s


def test_429_retry_after_is_respected_and_capped() -> None:
    result, slept = deliver(Script((429, {"Retry-After": "7"}), 200))
    assert result.ok and slept[0] >= 7.0
    result, slept = deliver(Script((429, {"Retry-After": "3600"}), 200), policy=RetryPolicy(max_retry_after_s=20))
    assert result.ok and slept[0] == 20.0


def test_retry_after_http_date() -> None:
    assert retry_after_seconds("Tue, 15 Sep 2026 00:00:10 GMT", 1_789_430_400_000) == 10.0
    assert retry_after_seconds("soon", NOW_MS) is None and retry_after_seconds(None, NOW_MS) is None
    assert retry_after_seconds("5", NOW_MS) == 5.0


def test_client_error_is_a_dead_letter_at_once() -> None:
    script = Script(400)
    result, slept = deliver(script)
    assert not result.ok and slept == [] and len(script.requests) == 1
    assert result.dead_letter.reason == "http_status" and result.dead_letter.last_status == 400


def test_always_failing_receiver_becomes_a_dead_letter_after_max_attempts() -> None:
    script = Script(503)
    result, slept = deliver(script, policy=RetryPolicy(max_attempts=4, base_delay_s=0.1, max_delay_s=0.3))
    assert len(script.requests) == 4 and len(slept) == 3 and max(slept) <= 0.3
    letter = result.dead_letter
    assert isinstance(letter, DeadLetter) and letter.attempts == 4 and letter.reason == "http_status"
    assert letter.to_json_dict()["alert"]["dedup_key"] == EVENT.dedup_key


def test_transport_errors_are_retried_then_dead_lettered() -> None:
    script = Script(httpx.ConnectError(f"cannot reach {SLACK_URL}"))
    result, _ = deliver(script, policy=RetryPolicy(max_attempts=3))
    assert result.dead_letter.reason == "transport" and len(script.requests) == 3
    assert "SeCrEtToKeN" not in result.dead_letter.error and "hooks.slack.com" in result.dead_letter.error
    ok, _ = deliver(Script(httpx.ReadTimeout("slow"), 200))
    assert ok.ok and ok.attempts == 2


def test_invalid_pagerduty_event_is_never_sent() -> None:
    bad_key = build_targets(pagerduty_routing_key=SecretStr("too-short"), pagerduty_min_severity="info")[0]
    script = Script(202)
    result, _ = deliver(script, target=bad_key)
    assert script.requests == [] and result.dead_letter.reason == "invalid_payload"
    assert "routing_key" in result.dead_letter.error and "too-short" not in json.dumps(
        result.dead_letter.to_json_dict()
    )


def test_pagerduty_target_sends_a_valid_event_to_the_configured_url() -> None:
    target = build_targets(pagerduty_routing_key=SecretStr(KEY), pagerduty_url="https://pd.test/v2/enqueue")[0]
    script = Script(202)
    result, _ = deliver(script, target=target)
    assert result.ok and str(script.requests[0].url) == "https://pd.test/v2/enqueue"
    assert script.bodies()[0]["routing_key"] == KEY and script.bodies()[0]["event_action"] == "trigger"


def test_secrets_never_reach_the_logs() -> None:
    targets = build_targets(
        slack_webhook_url=SecretStr(SLACK_URL),
        pagerduty_routing_key=SecretStr(KEY),
        pagerduty_url="https://pd.test/v2/enqueue/" + "p" * 8,
    )
    with structlog.testing.capture_logs() as logs:
        for target in targets:
            deliver(Script(500, 200), target=target)
            deliver(Script(404), target=target)
            deliver(
                Script(httpx.ConnectError(target.url.get_secret_value())),
                target=target,
                policy=RetryPolicy(max_attempts=2),
            )
    text = json.dumps(logs, default=str, ensure_ascii=False)
    assert logs and "SeCrEtToKeN" not in text and KEY not in text and "pppppppp" not in text
    assert "https://hooks.slack.com/…" in text
    assert redact_url("http://127.0.0.1:8080/hook?token=x") == "http://127.0.0.1:8080/…"


def test_settings_build_targets_and_policy() -> None:
    settings = load_settings(
        AlertSettings,
        slack_webhook_url=SLACK_URL,
        pagerduty_routing_key=KEY,
        webhook_urls="https://a.test/x, https://b.test/y",
        retries=2,
    )
    assert [t.name for t in targets_from_settings(settings)] == ["slack", "pagerduty", "webhook-0", "webhook-1"]
    assert policy_from_settings(settings).max_attempts == 3
    assert targets_from_settings(load_settings(AlertSettings)) == []
    assert "SeCrEtToKeN" not in repr(settings) and KEY not in repr(settings)


def test_backoff_grows_exponentially_within_jitter_bounds_and_caps() -> None:
    policy, rng = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0), random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        for _ in range(50):
            assert ceiling / 2 <= policy.backoff(attempt, rng) <= ceiling


def test_dispatcher_never_blocks_routes_by_severity_keeps_order_and_dead_letters_overflow() -> None:
    slack, pager = Script(200), Script(202)
    letters: list[DeadLetter] = []

    async def go() -> None:
        gate = asyncio.Event()

        async def handler(request: httpx.Request) -> httpx.Response:
            await gate.wait()
            target = slack if request.url.host == "slack.test" else pager
            return target(request)

        targets = build_targets(
            slack_webhook_url=SecretStr("https://slack.test/hook"),
            pagerduty_routing_key=SecretStr(KEY),
            pagerduty_url="https://pd.test/enqueue",
        )
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            dispatcher = AlertDispatcher(targets, letters.append, queue_size=2, client=client)
            await dispatcher.start()
            warning = replace(EVENT, severity="warning", dedup_key="w", alert_id="w1")
            assert dispatcher.submit(warning) == 1  # slack only: PagerDuty pages on critical
            assert dispatcher.submit(EVENT) == 2
            for _ in range(5):
                await asyncio.sleep(0)  # each worker now holds its first alert, awaiting the receiver
            assert dispatcher.pending() == 1  # a1 waits in slack's queue
            dispatcher.submit(replace(EVENT, action="resolve", alert_id="a2"))
            dispatcher.submit(replace(EVENT, alert_id="a3", dedup_key="x"))  # slack's queue (2) is full
            dispatcher.submit(replace(EVENT, alert_id="a4", dedup_key="y"))  # and now PagerDuty's too
            gate.set()
            await dispatcher.stop()
            assert dispatcher.delivered == len(slack.requests) + len(pager.requests) == 6

    asyncio.run(go())
    slack_ids = [r.content.decode().split("alert `")[1].split("`")[0] for r in slack.requests]
    assert slack_ids == ["w1", "a1", "a2"]
    assert [(b["event_action"], b["dedup_key"]) for b in pager.bodies()] == [
        ("trigger", EVENT.dedup_key),
        ("resolve", EVENT.dedup_key),
        ("trigger", "x"),
    ]
    assert [(d.target, d.alert.alert_id, d.reason) for d in letters] == [
        ("slack", "a3", "queue_full"),
        ("slack", "a4", "queue_full"),
        ("pagerduty", "a4", "queue_full"),
    ]


def test_stop_dead_letters_what_it_could_not_deliver() -> None:
    letters: list[DeadLetter] = []

    async def go() -> None:
        async def never(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        async with httpx.AsyncClient(transport=httpx.MockTransport(never)) as client:
            dispatcher = AlertDispatcher([webhook_target()], letters.append, client=client)
            await dispatcher.start()
            dispatcher.submit(EVENT)
            dispatcher.submit(replace(EVENT, alert_id="a2"))
            await asyncio.sleep(0)
            await dispatcher.stop(drain_timeout_s=0.05)

    asyncio.run(go())
    assert sorted((d.alert.alert_id, d.reason) for d in letters) == [("a1", "stopped"), ("a2", "stopped")]


def test_submit_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="start"):
        AlertDispatcher([webhook_target()], lambda d: None).submit(EVENT)
