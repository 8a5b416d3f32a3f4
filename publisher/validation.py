"""Validation of one UsageEvent: every rule that keeps bad input from reaching a total.

Used by the publisher on every ``emit`` (so it must cost microseconds), by the codec on every decoded event, and by
the JSON tools. A failure is an :class:`InvalidEvent` carrying a short, stable ``reason`` code — the same code a
dead-letter record carries — plus the field and a human message.

Shape of the code: each rule is one cheap inline test on the common (valid) path; only when it fails does a
helper work out *which* reason applies. Validation is also the publisher's guarantee that the event can be encoded
later at flush time, so Avro's ranges (``int`` 32-bit, ``long`` 64-bit) and map value types are checked here too:
an event that passes must never make a whole batch fail to encode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NoReturn

from costplane.publisher.event import OPERATIONS, SERVICE_TIERS, STATUSES, TOKEN_BUCKETS, UsageEvent
from costplane.publisher.identifiers import has_control, is_tenant, tenant_problem

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}").fullmatch
_REQUIRED_STRINGS = ("tenant", "provider", "model", "request_id")
_OPTIONAL_STRINGS = ("user_id", "team", "feature", "env", "session_id", "plan", "content_hash")
#: Text fields that name a budget member (``budgets.DIMENSIONS``): no control characters (publisher/identifiers.py).
DIMENSION_FIELDS = frozenset({"provider", "model", "user_id", "team", "feature", "env", "plan"})
_INT_MAX = 2**31 - 1  # Avro int
_LONG_MAX = 2**63 - 1  # Avro long
MAX_ATTRIBUTES = 64
#: 9999-12-31T23:59:59.999Z, the largest instant a datetime can hold; larger values are usually microseconds or
#: nanoseconds passed where milliseconds belong.
MAX_OCCURRED_AT_MS = 253_402_300_799_999
DEFAULT_MAX_TOKENS = 10_000_000  # per bucket: more is a unit mistake, not a real call
DEFAULT_MAX_STRING_LEN = 512


class InvalidEvent(ValueError):
    """A usage event that must not be counted; ``reason`` is a stable machine code (also used in dead letters)."""

    def __init__(self, reason: str, field: str | None, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.field = field
        self.message = message


def _text_problem(field: str, value: object, max_len: int, *, required: bool) -> None:
    """Raise the reason ``value`` breaks, or return when it is in fact fine (valid non-ASCII text)."""
    if value is None or value == "":
        if required:
            reason = "missing_tenant" if field == "tenant" else "missing_field"
            raise InvalidEvent(reason, field, f"{field} is required and must be a non-empty string")
        return
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", field, f"{field} must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise InvalidEvent("string_too_long", field, f"{field} is {len(value)} characters, the limit is {max_len}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent("not_utf8", field, f"{field} is not valid UTF-8 (lone surrogates)") from None
    if field == "tenant" and not is_tenant(value):
        raise InvalidEvent("bad_tenant", field, str(tenant_problem(value)))
    if field in DIMENSION_FIELDS and has_control(value):
        raise InvalidEvent("control_character", field, f"{field} holds a control character")


def _count_problem(field: str, value: object, limit: int, *, limit_is_sanity: bool) -> NoReturn:
    """Raise the reason a count that failed the inline range test breaks."""
    if type(value) is not int:  # bool is an int subclass: refuse it too
        raise InvalidEvent("bad_type", field, f"{field} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise InvalidEvent(
            "negative_tokens" if field.endswith("tokens") else "negative_value",
            field,
            f"{field} is {value}; counts are never negative",
        )
    if limit_is_sanity:
        raise InvalidEvent("absurd_tokens", field, f"{field} is {value}, above the sanity limit {limit}")
    raise InvalidEvent("out_of_range", field, f"{field} is {value}, larger than the schema type holds ({limit})")


def validate_event(
    ev: UsageEvent,
    *,
    now_ms: int | None = None,
    max_clock_skew_ms: int | None = None,
    max_tokens_per_bucket: int = DEFAULT_MAX_TOKENS,
    max_string_len: int = DEFAULT_MAX_STRING_LEN,
) -> None:
    """Raise :class:`InvalidEvent` for the first rule ``ev`` breaks; return None when it may be counted.

    Clock skew is checked only when both ``now_ms`` and ``max_clock_skew_ms`` are given (the worker passes them;
    an app's own clock is its reference, so the publisher does not). Only the future is bounded: an event more
    than ``max_clock_skew_ms`` after ``now_ms`` is rejected; an old event is always valid, however old. The worker
    passes the Kafka record's timestamp as ``now_ms``, not its own clock, so every reader of the same record
    (stream, sink, a replay, a restart) takes the same decision.
    """
    event_id = ev.event_id
    if type(event_id) is not str or _UUID(event_id) is None:
        raise InvalidEvent("bad_event_id", "event_id", f"event_id must be a UUID string, got {event_id!r}"[:200])
    # Unrolled on purpose: this runs on every emit and every decoded event, and a loop of getattr costs twice as
    # much. The common case is a short non-empty ASCII str; anything else goes to the helper that names the reason.
    tenant, provider, model, request_id = ev.tenant, ev.provider, ev.model, ev.request_id
    if not (
        type(tenant) is str
        and type(provider) is str
        and type(model) is str
        and type(request_id) is str
        and 0 < len(tenant) <= max_string_len
        and 0 < len(provider) <= max_string_len
        and 0 < len(model) <= max_string_len
        and 0 < len(request_id) <= max_string_len
        and (tenant + provider + model + request_id).isascii()
        and (provider + model).isprintable()
        and is_tenant(tenant)
    ):
        for name in _REQUIRED_STRINGS:
            _text_problem(name, getattr(ev, name), max_string_len, required=True)
    occurred_at = ev.occurred_at
    if type(occurred_at) is not int or not 0 < occurred_at <= MAX_OCCURRED_AT_MS:
        raise InvalidEvent(
            "bad_timestamp",
            "occurred_at",
            f"occurred_at must be positive UTC epoch milliseconds before year 10000, got {occurred_at!r}"[:200],
        )
    if now_ms is not None and max_clock_skew_ms is not None and occurred_at - now_ms > max_clock_skew_ms:
        raise InvalidEvent(
            "clock_skew",
            "occurred_at",
            f"occurred_at is {(occurred_at - now_ms) / 1000:+.0f}s after its record's time, "
            f"beyond the allowed skew of {max_clock_skew_ms / 1000:.0f}s",
        )
    attempt = ev.attempt
    if type(attempt) is not int or not 1 <= attempt <= _INT_MAX:
        raise InvalidEvent("bad_attempt", "attempt", f"attempt must be an integer from 1, got {attempt!r}")
    status = ev.status
    if not isinstance(status, str) or status not in STATUSES:
        raise InvalidEvent("unknown_status", "status", f"status {status!r} is not one of {', '.join(sorted(STATUSES))}")
    a, b, c = ev.input_tokens, ev.cached_input_tokens, ev.cache_write_tokens
    d, e = ev.output_tokens, ev.reasoning_tokens
    if not (
        type(a) is int
        and type(b) is int
        and type(c) is int
        and type(d) is int
        and type(e) is int
        and 0 <= a <= max_tokens_per_bucket
        and 0 <= b <= max_tokens_per_bucket
        and 0 <= c <= max_tokens_per_bucket
        and 0 <= d <= max_tokens_per_bucket
        and 0 <= e <= max_tokens_per_bucket
    ):
        for name in TOKEN_BUCKETS:
            value = getattr(ev, name)
            if type(value) is not int or not 0 <= value <= max_tokens_per_bucket:
                _count_problem(name, value, max_tokens_per_bucket, limit_is_sanity=True)
    operation = ev.operation
    if operation is not None and (not isinstance(operation, str) or operation not in OPERATIONS):
        raise InvalidEvent("unknown_operation", "operation", f"operation {operation!r} is not known")
    tier = ev.service_tier
    if tier is not None and (not isinstance(tier, str) or tier not in SERVICE_TIERS):
        raise InvalidEvent("unknown_service_tier", "service_tier", f"service_tier {tier!r} is not known")
    for name in _OPTIONAL_STRINGS:
        value = getattr(ev, name)
        if value is not None and (
            type(value) is not str or len(value) > max_string_len or not value.isascii() or not value.isprintable()
        ):
            _text_problem(name, value, max_string_len, required=False)
    _check_optional_counts(ev, max_tokens_per_bucket)
    estimated, cache_hit = ev.tokens_estimated, ev.result_cache_hit
    if estimated is not None and type(estimated) is not bool:
        raise InvalidEvent("bad_type", "tokens_estimated", "tokens_estimated must be a boolean")
    if cache_hit is not None and type(cache_hit) is not bool:
        raise InvalidEvent("bad_type", "result_cache_hit", "result_cache_hit must be a boolean")
    attributes = ev.attributes
    if type(attributes) is not dict or len(attributes) > MAX_ATTRIBUTES:
        raise InvalidEvent(
            "bad_attributes", "attributes", f"attributes must be a map of at most {MAX_ATTRIBUTES} string labels"
        )
    for key, value in attributes.items():
        if type(key) is not str or not key or len(key) > max_string_len or not key.isascii():
            if key == "":
                raise InvalidEvent("bad_attributes", "attributes", "attribute keys must be non-empty")
            _text_problem("attributes", key, max_string_len, required=True)
        if type(value) is not str or len(value) > max_string_len or not value.isascii():
            if value is None:
                raise InvalidEvent("bad_type", "attributes", f"attribute {key!r} has no value (null)")
            _text_problem("attributes", value, max_string_len, required=False)


def _check_optional_counts(ev: UsageEvent, max_tokens: int) -> None:
    """Optional integers: absent, or within the Avro type (and the sanity bound for token counts)."""
    turn, system, cap, latency, billed = (
        ev.turn,
        ev.system_prompt_tokens,
        ev.max_tokens,
        ev.latency_ms,
        ev.billed_cost_nanos,
    )
    if turn is not None and (type(turn) is not int or not 0 <= turn <= _INT_MAX):
        _count_problem("turn", turn, _INT_MAX, limit_is_sanity=False)
    if system is not None and (type(system) is not int or not 0 <= system <= max_tokens):
        _count_problem("system_prompt_tokens", system, max_tokens, limit_is_sanity=True)
    if cap is not None and (type(cap) is not int or not 0 <= cap <= max_tokens):
        _count_problem("max_tokens", cap, max_tokens, limit_is_sanity=True)
    if latency is not None and (type(latency) is not int or not 0 <= latency <= _LONG_MAX):
        _count_problem("latency_ms", latency, _LONG_MAX, limit_is_sanity=False)
    if billed is not None and (type(billed) is not int or not 0 <= billed <= _LONG_MAX):
        _count_problem("billed_cost_nanos", billed, _LONG_MAX, limit_is_sanity=False)


@dataclass(frozen=True, slots=True)
class FieldRule:
    """What :func:`validate_event` accepts in one field at its default limits, stated as data.

    For code that checks a field inline while doing something else with it: the publisher's emit encodes and
    validates in one pass (``codec_avro``), accepting on its fast path only what these rules allow and handing
    anything else to ``validate_event`` itself. A rule may be narrower than ``validate_event`` (that only costs
    the fast path), never wider; a differential test holds the two together.
    """

    kind: Literal["uuid", "text", "count", "choice", "flag", "labels"]
    optional: bool = False  # None is accepted
    low: int = 0  # count: smallest value
    high: int = 0  # count: largest value
    non_empty: bool = False  # text: "" is refused
    max_len: int = DEFAULT_MAX_STRING_LEN  # text, and the labels' keys and values
    choices: frozenset[str] = frozenset()  # choice
    max_items: int = MAX_ATTRIBUTES  # labels
    #: text: ``any`` ASCII, ``printable`` ASCII (a dimension value: no control characters) or a ``tenant`` id
    charset: Literal["any", "printable", "tenant"] = "any"


def _count(high: int, *, low: int = 0, optional: bool = False) -> FieldRule:
    return FieldRule("count", optional=optional, low=low, high=high)


_TEXT = FieldRule("text", non_empty=True)
_OPTIONAL_TEXT = FieldRule("text", optional=True)
_DIMENSION = FieldRule("text", non_empty=True, charset="printable")
_OPTIONAL_DIMENSION = FieldRule("text", optional=True, charset="printable")

#: Every UsageEvent field's rule, in schema order. A new schema field needs its rule here: the codec refuses to
#: build its checked writer without one, rather than let an unchecked field through the fast path.
RULES: dict[str, FieldRule] = {
    "event_id": FieldRule("uuid"),
    "occurred_at": _count(MAX_OCCURRED_AT_MS, low=1),
    "tenant": FieldRule("text", non_empty=True, max_len=128, charset="tenant"),
    "provider": _DIMENSION,
    "model": _DIMENSION,
    "request_id": _TEXT,
    "attempt": _count(_INT_MAX, low=1),
    "status": FieldRule("choice", choices=STATUSES),
    **{name: _count(DEFAULT_MAX_TOKENS) for name in TOKEN_BUCKETS},
    "operation": FieldRule("choice", optional=True, choices=OPERATIONS),
    "service_tier": FieldRule("choice", optional=True, choices=SERVICE_TIERS),
    "user_id": _OPTIONAL_DIMENSION,
    "team": _OPTIONAL_DIMENSION,
    "feature": _OPTIONAL_DIMENSION,
    "env": _OPTIONAL_DIMENSION,
    "session_id": _OPTIONAL_TEXT,
    "turn": _count(_INT_MAX, optional=True),
    "plan": _OPTIONAL_DIMENSION,
    "system_prompt_tokens": _count(DEFAULT_MAX_TOKENS, optional=True),
    "max_tokens": _count(DEFAULT_MAX_TOKENS, optional=True),
    "latency_ms": _count(_LONG_MAX, optional=True),
    "tokens_estimated": FieldRule("flag", optional=True),
    "result_cache_hit": FieldRule("flag", optional=True),
    "content_hash": _OPTIONAL_TEXT,
    "billed_cost_nanos": _count(_LONG_MAX, optional=True),
    "attributes": FieldRule("labels"),
}

#: The pattern an ``event_id`` must match (fully).
EVENT_ID_PATTERN = _UUID
