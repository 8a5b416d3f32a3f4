"""One SDK call and its HTTP attempts: what each attempt emits, and when the call's reservation is settled.

The SDK's retry loop runs *inside* one call of its ``request`` method, so the call-level state (request id,
attributes, the guard's reservation) is made there (:mod:`.calls`) and handed to the transport through a context
variable; the transport (:mod:`.transport`) makes one :class:`Attempt` per HTTP request. An attempt ends when its
body has been read to the end, closed early, or failed; only then are its tokens known.

Nothing here raises into the app: a failure of the instrumentation itself is counted in the publisher's
``costplane_publisher_errors_total{kind="instrumentation"}`` and logged (rate-limited), and the call goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from uuid6 import uuid7

from costplane.integrations.fields import event_fields
from costplane.integrations.wire import BodyReader, Outcome, RequestInfo, prompt_of
from costplane.publisher.attempts import estimate_usage, status_for
from costplane.publisher.event import TOKEN_BUCKETS
from costplane.publisher.metrics import RateLimitedLog


class Instrumentation:
    """What one instrumented client shares: publisher, provider name, attributes, guard, and the error path."""

    def __init__(
        self,
        *,
        publisher: Any,
        provider: str,
        attributes: Mapping[str, Any],
        guard: Any = None,
        fallback: Any = None,
        strip_added_usage_chunk: bool = True,
    ) -> None:
        self.publisher = publisher
        self.provider = provider
        self.attributes = dict(attributes)
        self.guard = guard
        self.fallback = fallback
        self.strip_added_usage_chunk = strip_added_usage_chunk
        self.log = RateLimitedLog()

    def internal_error(self, kind: str, exc: BaseException) -> None:
        """Count and log a failure of the instrumentation itself; the app's call is never affected by it."""
        metrics = getattr(self.publisher, "metrics", None)
        try:
            if metrics is not None:
                metrics.errors.labels("instrumentation").inc()
            self.log.warning(
                f"instrumentation:{kind}",
                "instrumentation failed; the call went on unrecorded",
                step=kind,
                error=repr(exc),
            )
        except Exception:  # noqa: BLE001 - even the error path must not reach the app; nothing left to report to
            return

    def unrecognised(self, shape: str) -> None:
        report = getattr(self.publisher, "unrecognised_usage", None)
        if callable(report):
            report(shape, provider=self.provider)

    def emit(self, fields: dict[str, Any]) -> None:
        try:
            self.publisher.record(**fields)
        except Exception as exc:  # noqa: BLE001 - a strict publisher raising InvalidEvent must not break the call
            self.internal_error("emit", exc)


#: The SDK call the current HTTP request belongs to (set around the SDK's ``request`` method).
CURRENT_CALL: ContextVar[CallState | None] = ContextVar("costplane_call", default=None)


@dataclass(slots=True)
class CallState:
    """One SDK call: its request id, event fields, reservation, and the usage of its finished attempts."""

    fields: dict[str, Any]
    request_id: str = field(default_factory=lambda: str(uuid7()))
    reservation: Any = None
    attempts: int = 0
    open_attempts: int = 0
    returned: bool = False
    settled: bool = False
    #: ``stream_options.include_usage`` was added to this call's request by the instrumentation.
    added_usage_chunk: bool = False
    #: The request's JSON body as the SDK holds it (saves parsing the bytes again on every attempt).
    body: dict[str, Any] | None = None
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_BUCKETS, 0))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_attempt(self) -> int:
        with self.lock:
            self.attempts += 1
            self.open_attempts += 1
            return self.attempts

    def attempt_done(self, usage: Mapping[str, int]) -> None:
        with self.lock:
            self.open_attempts -= 1
            for k in TOKEN_BUCKETS:
                self.usage[k] += int(usage.get(k, 0))

    def take_settlement(self) -> tuple[Any, dict[str, int]] | None:
        """(reservation, usage of every attempt) once the call returned and no attempt is still open; once."""
        with self.lock:
            if self.settled or not self.returned or self.open_attempts > 0 or self.reservation is None:
                return None
            self.settled = True
            return self.reservation, dict(self.usage)


def settle_sync(instr: Instrumentation, call: CallState | None) -> None:
    """Settle the call's reservation with the usage of all its attempts (each was billed), when it is time."""
    job = call.take_settlement() if call is not None else None
    if job is None:
        return
    reservation, usage = job
    try:
        reservation.settle(usage if any(usage.values()) else None)
    except Exception as exc:  # noqa: BLE001 - settling is bookkeeping; its failure is counted, not raised
        instr.internal_error("settle", exc)


async def settle_async(instr: Instrumentation, call: CallState | None) -> None:
    """:func:`settle_sync` for the asyncio guard (a synchronous guard is called directly)."""
    job = call.take_settlement() if call is not None else None
    if job is None:
        return
    reservation, usage = job
    try:
        settle = getattr(reservation, "asettle", None) if _is_async_guard(instr.guard) else None
        if settle is not None:
            await settle(usage if any(usage.values()) else None)
        else:
            reservation.settle(usage if any(usage.values()) else None)
    except Exception as exc:  # noqa: BLE001 - as settle_sync
        instr.internal_error("settle", exc)


def _is_async_guard(guard: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(getattr(guard, "reserve", None))


def _status_of_code(code: int) -> str:
    if code == 429:
        return "rate_limited"
    if code == 408:
        return "timeout"
    return "ok" if code < 400 else "error"


class Attempt:
    """One HTTP attempt: started when the request goes out, ended (and emitted, once) when its body ends."""

    __slots__ = ("instr", "_info", "call", "number", "request_id", "_fields", "_started", "_code", "reader", "_ended")

    def __init__(
        self,
        instr: Instrumentation,
        info: RequestInfo,
        call: CallState | None,
        retry_header: str | None,
        idempotency_key: str | None,
    ) -> None:
        self.instr = instr
        self._info = info
        self.call = call
        if call is not None:
            self.number = call.next_attempt()
            self.request_id = call.request_id
            self._fields = call.fields
        else:  # sent outside an instrumented client's call (another client on this transport): the SDK's headers
            self.number = int(retry_header) + 1 if retry_header and retry_header.isdigit() else 1
            self.request_id = _request_id_from(idempotency_key)
            from costplane.integrations.context import current_attributes

            self._fields = event_fields(instr.attributes, current_attributes())
        self._started = time.perf_counter()
        self._code = 0
        self.reader: BodyReader | None = None
        self._ended = False

    def on_response(self, code: int, content_type: str, content_encoding: str, drop_usage_chunk: bool) -> BodyReader:
        self._code = code
        sse = "text/event-stream" in content_type
        self.reader = BodyReader(
            sse=sse, content_encoding=content_encoding, drop_usage_chunk=drop_usage_chunk and sse and code < 400
        )
        return self.reader

    def end(self, *, body_ended: bool, exc: BaseException | None = None) -> None:
        """Emit this attempt's event (once): ``body_ended`` false with no ``exc`` is a body closed early."""
        if self._ended:
            return
        self._ended = True
        usage: dict[str, int] = {}
        try:
            latency_ms = int((time.perf_counter() - self._started) * 1000)
            status, usage, estimated = self._result(body_ended, exc)
            fields = {
                **self._fields,
                **usage,
                "provider": self.instr.provider,
                "model": self._info.model or "unknown",
                "operation": self._info.operation,
                "request_id": self.request_id,
                "attempt": self.number,
                "status": status,
                "latency_ms": latency_ms,
            }
            if self._info.max_tokens is not None:
                fields["max_tokens"] = self._info.max_tokens
            if estimated:
                fields["tokens_estimated"] = True
            self.instr.emit(fields)
        except Exception as err:  # noqa: BLE001 - recording must never fail the call
            self.instr.internal_error("attempt", err)
        finally:
            if self.call is not None:
                self.call.attempt_done(usage)

    def _result(self, body_ended: bool, exc: BaseException | None) -> tuple[str, dict[str, int], bool]:
        """(status, usage buckets, estimated) of the ended attempt."""
        reader = self.reader
        if reader is None:  # no response at all: refused, timed out or cancelled before any header arrived
            return (status_for(exc) if exc is not None else "error"), {}, False
        outcome = reader.outcome(body_ended=body_ended and exc is None)
        if self._code >= 400:
            return _status_of_code(self._code), {}, False
        if exc is not None:
            status = status_for(exc)
        elif not outcome.complete:
            status = "cancelled"
        else:
            status = "error" if outcome.stream_error else "ok"
        if outcome.usage is not None and outcome.complete:
            return status, outcome.usage, False
        if outcome.complete and not outcome.recognised and not reader.sse:
            self.instr.unrecognised("response_body")
        return status, self._estimate(outcome), True

    def _estimate(self, outcome: Outcome) -> dict[str, int]:
        """Tokens of an attempt whose usage never came: the prompt counted offline (or as the provider reported
        it up front), and the output generated so far counted from the text received."""
        model = self._info.model or "gpt-4o"
        messages, prompt = prompt_of(self._info.body)
        output = "".join(outcome.text) or None
        try:
            counted = estimate_usage(model, messages=messages, prompt=prompt or None, output_text=output)
        except (TypeError, ValueError) as exc:  # a prompt the tokenizer cannot read: count the output only
            self.instr.internal_error("estimate", exc)
            counted = estimate_usage(model, output_text=output)
        partial = outcome.partial
        if (
            partial is not None
            and sum(partial[k] for k in ("input_tokens", "cached_input_tokens", "cache_write_tokens")) > 0
        ):
            counted.update({k: partial[k] for k in ("input_tokens", "cached_input_tokens", "cache_write_tokens")})
            counted["output_tokens"] = max(counted["output_tokens"], partial["output_tokens"])
        return counted


def _request_id_from(idempotency_key: str | None) -> str:
    """A stable request id from the SDK's idempotency key (the same on every retry of one call)."""
    if not idempotency_key:
        return str(uuid7())
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, "costplane:" + idempotency_key))
