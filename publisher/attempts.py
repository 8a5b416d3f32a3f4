"""Record every attempt of one logical request — including the failed, timed-out and interrupted ones.

Retries resend the whole prompt and are billed again; dashboards that count only successful responses never see
that spend. Usage::

    with publisher.request(tenant="acme", provider="openai", model="gpt-4o", feature="search") as req:
        for _ in range(3):
            with req.attempt() as attempt:
                response = client.chat.completions.create(...)
                attempt.usage_from(response)
            if attempt.status == "ok":
                break

Each ``attempt()`` block emits exactly one event when it exits, with the attempt number, the status derived from
how it ended (an exception is re-raised untouched), and the latency. ``async with`` works the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from uuid6 import uuid7

from costplane.publisher.adapters import parse_usage


def status_for(exc: BaseException | None) -> str:
    """The attempt status an exception means (by type and common SDK attributes, no SDK imports)."""
    if exc is None:
        return "ok"
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    if isinstance(exc, TimeoutError):
        return "timeout"
    name = type(exc).__name__.lower()
    if getattr(exc, "status_code", None) == 429 or "ratelimit" in name or "rate_limit" in name:
        return "rate_limited"
    if "timeout" in name:
        return "timeout"
    return "error"


def estimate_usage(
    model: Any,
    *,
    messages: list[dict[str, Any]] | None = None,
    prompt: str | None = None,
    output_text: str | None = None,
) -> dict[str, int]:
    """Input and output tokens counted offline with the model's tokenizer (an estimate for non-OpenAI models)."""
    from costplane.pricing.tokens import count_messages, count_text

    name = model if isinstance(model, str) and model else "gpt-4o"
    prompt_tokens = 0
    if messages:
        prompt_tokens = count_messages(messages, name).tokens
    elif prompt:
        prompt_tokens = count_text(prompt, name).tokens
    output = count_text(output_text, name).tokens if output_text else 0
    return {
        "input_tokens": prompt_tokens,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": output,
        "reasoning_tokens": 0,
    }


class AttemptRecorder:
    """One attempt; set its usage with :meth:`usage_from` or :meth:`set_usage` before the block exits."""

    def __init__(self, request: RequestRecorder, number: int) -> None:
        self._request = request
        self.number = number
        self.status = "ok"
        self.usage: dict[str, int] = {}
        self.extra: dict[str, Any] = {}
        self._started = 0.0

    def usage_from(
        self,
        response_or_usage: Any,
        *,
        messages: list[dict[str, Any]] | None = None,
        prompt: str | None = None,
        output_text: str | None = None,
    ) -> None:
        """Take token counts from a provider response / usage object (dict or SDK object).

        OpenAI, Anthropic, Gemini, Bedrock Converse, Mistral and Cohere shapes are recognised. Any other shape is
        not recorded as a free call: the publisher counts and logs it (``unrecognised_usage``), and the tokens of
        ``messages`` / ``prompt`` and ``output_text``, when given, are counted offline and flagged estimated.
        """
        found = parse_usage(response_or_usage)
        if found is not None:
            self.usage = found
            return
        self._request.unrecognised(type(response_or_usage).__name__)
        self.usage = estimate_usage(
            self._request.common.get("model"), messages=messages, prompt=prompt, output_text=output_text
        )
        self.extra["tokens_estimated"] = True

    def set_usage(self, **buckets: int) -> None:
        self.usage = dict(buckets)

    def set(self, **fields: Any) -> None:
        """Extra event fields for this attempt (e.g. ``service_tier``, ``attributes``)."""
        self.extra.update(fields)

    def _begin(self) -> AttemptRecorder:
        self._started = self._request.clock()
        return self

    def _end(self, exc: BaseException | None) -> None:
        if exc is not None or self.status == "ok":
            self.status = status_for(exc)
        latency_ms = int((self._request.clock() - self._started) * 1000)
        self._request.emit_attempt(self, latency_ms)

    def __enter__(self) -> AttemptRecorder:
        return self._begin()

    def __exit__(self, _t: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None) -> None:
        self._end(exc)

    async def __aenter__(self) -> AttemptRecorder:
        return self._begin()

    async def __aexit__(
        self, _t: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._end(exc)


class RequestRecorder:
    """Groups attempts under one ``request_id``; usable with ``with`` / ``async with`` or on its own."""

    def __init__(
        self,
        record: Callable[..., bool],
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] | None = None,
        on_unrecognised: Callable[[str], None] | None = None,
        **common: Any,
    ) -> None:
        self._record = record
        self._on_unrecognised = on_unrecognised
        self.clock = clock
        self.common = common
        self.request_id = str(common.pop("request_id", None) or (new_id() if new_id is not None else uuid7()))
        self.attempts = 0

    def attempt(self) -> AttemptRecorder:
        self.attempts += 1
        return AttemptRecorder(self, self.attempts)

    def unrecognised(self, shape: str) -> None:
        """Report a usage object of unknown shape to the publisher's metrics and log (when there is one)."""
        if self._on_unrecognised is not None:
            self._on_unrecognised(shape)

    def emit_attempt(self, attempt: AttemptRecorder, latency_ms: int) -> None:
        fields = {**self.common, **attempt.extra, **attempt.usage}
        fields.update(
            request_id=self.request_id,
            attempt=attempt.number,
            status=attempt.status,
            latency_ms=latency_ms,
            occurred_at=int(self.clock() * 1000),
        )
        self._record(**fields)

    def __enter__(self) -> RequestRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> RequestRecorder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
