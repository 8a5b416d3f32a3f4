"""Validation of one UsageEvent: every rule that keeps bad input from reaching a total.

Used by the publisher on every ``emit`` (so it must cost microseconds), by the codec on every decoded event, and by
the JSON tools. A failure is an :class:`InvalidEvent` carrying a short, stable ``reason`` code — the same code a
dead-letter record carries — plus the field and a human message.
"""

from __future__ import annotations

import re

from costplane.publisher.event import OPERATIONS, SERVICE_TIERS, STATUSES, TOKEN_BUCKETS, UsageEvent

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_REQUIRED_STRINGS = ("tenant", "provider", "model", "request_id")
_OPTIONAL_STRINGS = ("user_id", "team", "feature", "env", "session_id", "plan", "content_hash")
_OPTIONAL_COUNTS = ("system_prompt_tokens", "max_tokens", "latency_ms", "billed_cost_nanos", "turn")
MAX_ATTRIBUTES = 64


class InvalidEvent(ValueError):
    """A usage event that must not be counted; ``reason`` is a stable machine code (also used in dead letters)."""

    def __init__(self, reason: str, field: str | None, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.field = field
        self.message = message


def _check_text(field: str, value: object, max_len: int, *, required: bool) -> None:
    if value is None or value == "":
        if required:
            reason = "missing_tenant" if field == "tenant" else "missing_field"
            raise InvalidEvent(reason, field, f"{field} is required and must be a non-empty string")
        return
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", field, f"{field} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise InvalidEvent("string_too_long", field, f"{field} is {len(value)} characters, the limit is {max_len}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent("not_utf8", field, f"{field} is not valid UTF-8 (lone surrogates)") from None


def _check_count(field: str, value: object, limit: int | None) -> None:
    if type(value) is not int:  # bool is an int subclass: refuse it too
        raise InvalidEvent("bad_type", field, f"{field} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise InvalidEvent("negative_tokens" if field.endswith("tokens") else "negative_value", field,
                           f"{field} is {value}; counts are never negative")
    if limit is not None and value > limit:
        raise InvalidEvent("absurd_tokens", field, f"{field} is {value}, above the sanity limit {limit}")


def validate_event(
    ev: UsageEvent,
    *,
    now_ms: int | None = None,
    max_clock_skew_ms: int | None = None,
    max_tokens_per_bucket: int = 10_000_000,
    max_string_len: int = 512,
) -> None:
    """Raise :class:`InvalidEvent` for the first rule ``ev`` breaks; return None when it may be counted.

    Clock skew is checked only when both ``now_ms`` and ``max_clock_skew_ms`` are given (the worker passes them;
    an app's own clock is its reference, so the publisher does not).
    """
    if not isinstance(ev.event_id, str) or not _UUID.match(ev.event_id):
        raise InvalidEvent("bad_event_id", "event_id", f"event_id must be a UUID string, got {ev.event_id!r}")
    for field in _REQUIRED_STRINGS:
        _check_text(field, getattr(ev, field), max_string_len, required=True)
    if type(ev.occurred_at) is not int or ev.occurred_at <= 0:
        raise InvalidEvent("bad_timestamp", "occurred_at", "occurred_at must be positive epoch milliseconds")
    if now_ms is not None and max_clock_skew_ms is not None and abs(ev.occurred_at - now_ms) > max_clock_skew_ms:
        raise InvalidEvent("clock_skew", "occurred_at",
                           f"occurred_at is {(ev.occurred_at - now_ms) / 1000:+.0f}s from now, "
                           f"beyond the allowed skew of {max_clock_skew_ms / 1000:.0f}s")
    if type(ev.attempt) is not int or ev.attempt < 1:
        raise InvalidEvent("bad_attempt", "attempt", f"attempt must be an integer ≥ 1, got {ev.attempt!r}")
    if ev.status not in STATUSES:
        raise InvalidEvent("unknown_status", "status",
                           f"status {ev.status!r} is not one of {', '.join(sorted(STATUSES))}")
    for field in TOKEN_BUCKETS:
        _check_count(field, getattr(ev, field), max_tokens_per_bucket)
    if ev.operation is not None and ev.operation not in OPERATIONS:
        raise InvalidEvent("unknown_operation", "operation", f"operation {ev.operation!r} is not known")
    if ev.service_tier is not None and ev.service_tier not in SERVICE_TIERS:
        raise InvalidEvent("unknown_service_tier", "service_tier", f"service_tier {ev.service_tier!r} is not known")
    for field in _OPTIONAL_STRINGS:
        _check_text(field, getattr(ev, field), max_string_len, required=False)
    for field in _OPTIONAL_COUNTS:
        value = getattr(ev, field)
        if value is not None:
            _check_count(field, value, max_tokens_per_bucket if field.endswith("tokens") else None)
    for field in ("tokens_estimated", "result_cache_hit"):
        value = getattr(ev, field)
        if value is not None and not isinstance(value, bool):
            raise InvalidEvent("bad_type", field, f"{field} must be a boolean")
    if ev.attributes:
        if not isinstance(ev.attributes, dict) or len(ev.attributes) > MAX_ATTRIBUTES:
            raise InvalidEvent("bad_attributes", "attributes", f"attributes must be a map of ≤ {MAX_ATTRIBUTES}")
        for key, value in ev.attributes.items():
            _check_text("attributes", key, max_string_len, required=True)
            _check_text("attributes", value, max_string_len, required=False)
