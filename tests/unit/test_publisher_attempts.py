"""Every attempt of a logical request becomes one event, whatever way it ended."""

from __future__ import annotations

import asyncio

import pytest

from costplane.publisher import InMemoryPublisher
from costplane.publisher.attempts import status_for


class RateLimitError(Exception):
    status_code = 429


def test_every_attempt_is_recorded_with_its_status() -> None:
    pub = InMemoryPublisher(strict=True)
    with pub.request(tenant="acme", provider="openai", model="gpt-4o", feature="search") as req:
        for exc in (TimeoutError("slow"), RateLimitError("429"), ValueError("bad json")):
            with pytest.raises(type(exc)), req.attempt() as attempt:
                attempt.set_usage(input_tokens=1200)
                raise exc
        with req.attempt() as attempt:
            attempt.usage_from({"prompt_tokens": 1200, "completion_tokens": 40})
    assert [(e.attempt, e.status) for e in pub.events] == [(1, "timeout"), (2, "rate_limited"), (3, "error"), (4, "ok")]
    assert len({e.request_id for e in pub.events}) == 1
    assert all(e.input_tokens == 1200 for e in pub.events) and pub.events[-1].output_tokens == 40


def test_async_attempts_and_cancellation() -> None:
    pub = InMemoryPublisher(strict=True)

    async def call() -> None:
        req = pub.request(tenant="acme", provider="anthropic", model="claude-3-5-haiku-20241022")
        async with req.attempt() as attempt:
            attempt.set_usage(input_tokens=10, output_tokens=2)
        with pytest.raises(asyncio.CancelledError):
            async with req.attempt():
                raise asyncio.CancelledError()

    asyncio.run(call())
    assert [e.status for e in pub.events] == ["ok", "cancelled"]
    assert status_for(KeyboardInterrupt()) == "cancelled"


def test_keyboard_interrupt_is_recorded_as_cancelled_and_reraised() -> None:
    pub = InMemoryPublisher(strict=True)
    req = pub.request(tenant="acme", provider="openai", model="gpt-4o", request_id="r-42")
    with pytest.raises(KeyboardInterrupt), req.attempt():
        raise KeyboardInterrupt
    (event,) = pub.events
    assert (event.status, event.request_id, event.attempt) == ("cancelled", "r-42", 1)
    assert event.latency_ms is not None and event.latency_ms >= 0


def test_latency_comes_from_the_injected_clock() -> None:
    now = [100.0]
    pub = InMemoryPublisher(strict=True, clock=lambda: now[0])
    req = pub.request(tenant="acme", provider="openai", model="gpt-4o")
    with req.attempt() as attempt:
        now[0] += 1.25
        attempt.set(service_tier="batch")
    (event,) = pub.events
    assert event.latency_ms == 1250 and event.service_tier == "batch" and event.occurred_at == 101_250


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (None, "ok"),
        (TimeoutError(), "timeout"),
        (asyncio.CancelledError(), "cancelled"),
        (type("APITimeoutError", (Exception,), {})(), "timeout"),
        (type("RateLimitError", (Exception,), {})(), "rate_limited"),
        (RuntimeError(), "error"),
    ],
)
def test_status_for_exceptions(exc: BaseException | None, status: str) -> None:
    assert status_for(exc) == status


def test_a_status_set_by_the_caller_is_kept() -> None:
    pub = InMemoryPublisher(strict=True)
    req = pub.request(tenant="acme", provider="openai", model="gpt-4o")
    with req.attempt() as attempt:
        attempt.status = "invalid_output"  # the call returned, but its output failed the app's parser
    assert pub.events[0].status == "invalid_output"
