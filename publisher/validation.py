"""Validation of one UsageEvent: every rule that keeps bad input from reaching a total.

Used by the publisher on every ``emit`` (so it must cost microseconds), by the codec on every decoded event, and by
the JSON tools. A failure is an :class:`InvalidEvent` carrying a short, stable ``reason`` code — the same code a
dead-letter record carries — plus the field and a human message.

Shape of the code: the rules are data, :data:`RULES`, one :class:`FieldRule` per schema field, and that one table
drives every checker: :func:`validate_event` is a loop over it (a cheap acceptance test per field on the common,
valid path; only when it fails does a helper work out *which* reason applies), and the codec's checked writer
(``codec_avro``) builds its inline checks from the same rules. Validation is also the publisher's guarantee that
the event can be encoded later at flush time, so Avro's ranges (``int`` 32-bit, ``long`` 64-bit) and map value
types are checked here too: an event that passes must never make a whole batch fail to encode.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, NamedTuple, NoReturn

from costplane.publisher.event import OPERATIONS, SERVICE_TIERS, STATUSES, TOKEN_BUCKETS, UsageEvent
from costplane.publisher.identifiers import has_control, is_tenant, tenant_problem

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}").fullmatch
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


# -- the table -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldRule:
    """What one field accepts at the default limits, stated as data: the single source of every checker.

    :func:`validate_event` loops over these rules; the publisher's emit encodes and validates in one pass
    (``codec_avro``), accepting on its fast path only what these rules allow and handing anything else to
    ``validate_event``. The acceptance tests built from a rule are narrower than the rule's full check in one way
    only: text must be ASCII to pass them; other valid UTF-8 text is let through by the slower reason helpers.
    """

    kind: Literal["uuid", "text", "count", "choice", "flag", "labels"]
    optional: bool = False  # None is accepted
    low: int = 0  # count: smallest value
    high: int = 0  # count: largest value
    #: count: ``high`` is the per-bucket sanity bound on tokens (``absurd_tokens``; ``validate_event`` may lower or
    #: raise it) rather than the Avro type's range (``out_of_range``)
    sanity: bool = False
    non_empty: bool = False  # text: "" is refused
    max_len: int = DEFAULT_MAX_STRING_LEN  # text, and the labels' keys and values
    choices: frozenset[str] = frozenset()  # choice
    max_items: int = MAX_ATTRIBUTES  # labels
    #: text: ``any`` ASCII, ``printable`` ASCII (a dimension value: no control characters) or a ``tenant`` id
    charset: Literal["any", "printable", "tenant"] = "any"
    #: One reason for any value the rule refuses (uuid, choice, and counts with a meaning of their own), with its
    #: message (``{value!r}`` is replaced); empty: the kind's helper names a reason per problem.
    reason: str = ""
    message: str = ""


def _count(
    high: int, *, low: int = 0, optional: bool = False, sanity: bool = False, reason: str = "", message: str = ""
) -> FieldRule:
    return FieldRule("count", optional=optional, low=low, high=high, sanity=sanity, reason=reason, message=message)


_TEXT = FieldRule("text", non_empty=True)
_OPTIONAL_TEXT = FieldRule("text", optional=True)
_DIMENSION = FieldRule("text", non_empty=True, charset="printable")
_OPTIONAL_DIMENSION = FieldRule("text", optional=True, charset="printable")
_TOKENS = _count(DEFAULT_MAX_TOKENS, sanity=True)
_OPTIONAL_TOKENS = _count(DEFAULT_MAX_TOKENS, optional=True, sanity=True)

#: Every UsageEvent field's rule, in schema order (also the order ``validate_event`` checks them in). A new schema
#: field needs its rule here: the codec refuses to build its checked writer without one, rather than let an
#: unchecked field through the fast path.
RULES: dict[str, FieldRule] = {
    "event_id": FieldRule("uuid", reason="bad_event_id", message="event_id must be a UUID string, got {value!r}"),
    "occurred_at": _count(
        MAX_OCCURRED_AT_MS,
        low=1,
        reason="bad_timestamp",
        message="occurred_at must be positive UTC epoch milliseconds before year 10000, got {value!r}",
    ),
    "tenant": FieldRule("text", non_empty=True, max_len=128, charset="tenant"),
    "provider": _DIMENSION,
    "model": _DIMENSION,
    "request_id": _TEXT,
    "attempt": _count(
        _INT_MAX, low=1, reason="bad_attempt", message="attempt must be an integer from 1, got {value!r}"
    ),
    "status": FieldRule(
        "choice",
        choices=STATUSES,
        reason="unknown_status",
        message="status {value!r} is not one of " + ", ".join(sorted(STATUSES)),
    ),
    **dict.fromkeys(TOKEN_BUCKETS, _TOKENS),
    "operation": FieldRule(
        "choice",
        optional=True,
        choices=OPERATIONS,
        reason="unknown_operation",
        message="operation {value!r} is not known",
    ),
    "service_tier": FieldRule(
        "choice",
        optional=True,
        choices=SERVICE_TIERS,
        reason="unknown_service_tier",
        message="service_tier {value!r} is not known",
    ),
    "user_id": _OPTIONAL_DIMENSION,
    "team": _OPTIONAL_DIMENSION,
    "feature": _OPTIONAL_DIMENSION,
    "env": _OPTIONAL_DIMENSION,
    "session_id": _OPTIONAL_TEXT,
    "turn": _count(_INT_MAX, optional=True),
    "plan": _OPTIONAL_DIMENSION,
    "system_prompt_tokens": _OPTIONAL_TOKENS,
    "max_tokens": _OPTIONAL_TOKENS,
    "latency_ms": _count(_LONG_MAX, optional=True),
    "tokens_estimated": FieldRule("flag", optional=True),
    "result_cache_hit": FieldRule("flag", optional=True),
    "content_hash": _OPTIONAL_TEXT,
    "billed_cost_nanos": _count(_LONG_MAX, optional=True),
    "attributes": FieldRule("labels"),
}

#: The pattern an ``event_id`` must match (fully).
EVENT_ID_PATTERN = _UUID


# -- the checker ---------------------------------------------------------------------------------------------


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
    than the skew *ahead* of ``now_ms`` is refused, while an old event is valid (replays and backfills of old data).
    """
    checker = _checker(max_tokens_per_bucket, max_string_len)
    if not checker.accepts_all(ev):  # one generated test of every rule; only on a miss, field by field
        for name, accepts, problem in checker.fields:
            value = getattr(ev, name)
            if not accepts(value):
                problem(value)  # raises the reason, or returns: unusual but valid (non-ASCII text)
    if now_ms is not None and max_clock_skew_ms is not None and ev.occurred_at - now_ms > max_clock_skew_ms:
        raise InvalidEvent(
            "clock_skew",
            "occurred_at",
            f"occurred_at is {(ev.occurred_at - now_ms) / 1000:+.0f}s from now, "
            f"beyond the allowed skew of {max_clock_skew_ms / 1000:.0f}s",
        )


_Accept = Callable[[object], bool]
_Problem = Callable[[object], None]


@dataclass(frozen=True, slots=True)
class _Limits:
    """The limits ``validate_event`` was called with, applied over the table's defaults."""

    max_tokens: int
    max_len: int


class _Checker(NamedTuple):
    """The checks of :data:`RULES` at one set of limits."""

    #: every field's acceptance test in one generated function (the common, valid path: no call per field)
    accepts_all: Callable[[UsageEvent], bool]
    #: (field, acceptance test, reason helper) per rule, in the table's order
    fields: tuple[tuple[str, _Accept, _Problem], ...]


@cache
def _checker(max_tokens: int, max_len: int) -> _Checker:
    """The checks of every rule of :data:`RULES`, built once per set of limits.

    Each rule's acceptance test is one Python expression (:func:`_accept_source`); the per-field tests and the
    all-fields test are compiled from the same expressions, so they cannot disagree.
    """
    limits = _Limits(max_tokens, max_len)
    namespace: dict[str, Any] = {"UUID": _UUID, "IS_TENANT": is_tenant}
    sources = {name: _accept_source(name, rule, limits, namespace) for name, rule in RULES.items()}
    lines = ["def accepts_all(ev):"]
    for name, source in sources.items():
        lines += [f"    v = ev.{name}", f"    if not ({source}): return False"]
    lines.append("    return True")
    exec(compile("\n".join(lines), "<costplane validation rules>", "exec"), namespace)  # noqa: S102 - from RULES
    fields = tuple(
        (name, _compile_accept(source, namespace), _PROBLEM[rule.kind](name, rule, limits))
        for (name, source), rule in zip(sources.items(), RULES.values(), strict=True)
    )
    return _Checker(namespace["accepts_all"], fields)


def _compile_accept(source: str, namespace: dict[str, Any]) -> _Accept:
    accepts: _Accept = eval(f"lambda v: {source}", namespace)  # noqa: S307 - built from RULES, not from input
    return accepts


def acceptance(rule: FieldRule) -> _Accept:
    """The rule's acceptance test at the default limits: True for a value the common path takes as it is.

    False is not yet a verdict: the value breaks the rule, or is only unusual (non-ASCII text); ``validate_event``
    decides. For code that checks a field inline while doing something else with it (the codec's checked writer).
    """
    namespace: dict[str, Any] = {"UUID": _UUID, "IS_TENANT": is_tenant}
    limits = _Limits(DEFAULT_MAX_TOKENS, DEFAULT_MAX_STRING_LEN)
    return _compile_accept(_accept_source("field", rule, limits, namespace), namespace)


def _accept_source(name: str, rule: FieldRule, limits: _Limits, namespace: dict[str, Any]) -> str:
    """The rule's acceptance test as an expression of ``v``: True for a value the common path takes as it is."""
    test = _ACCEPT[rule.kind](name, rule, limits, namespace)
    return f"v is None or ({test})" if rule.optional else test


def _refuse_all(name: str, rule: FieldRule, _limits: _Limits) -> _Problem:
    """The rule's own reason for whatever value it refused."""

    def problem(value: object) -> NoReturn:
        raise InvalidEvent(rule.reason, name, rule.message.format(value=value)[:200])

    return problem


def _accept_uuid(_name: str, _rule: FieldRule, _limits: _Limits, _namespace: dict[str, Any]) -> str:
    return "type(v) is str and UUID(v) is not None"


def _accept_count(_name: str, rule: FieldRule, limits: _Limits, _namespace: dict[str, Any]) -> str:
    return f"type(v) is int and {rule.low} <= v <= {limits.max_tokens if rule.sanity else rule.high}"


def _count_reason(name: str, rule: FieldRule, limits: _Limits) -> _Problem:
    if rule.reason:
        return _refuse_all(name, rule, limits)
    limit = limits.max_tokens if rule.sanity else rule.high
    return lambda value: _count_problem(name, value, limit, limit_is_sanity=rule.sanity)


def _count_problem(field: str, value: object, limit: int, *, limit_is_sanity: bool) -> NoReturn:
    """Raise the reason a count that failed its acceptance test breaks."""
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


def _accept_text(_name: str, rule: FieldRule, limits: _Limits, _namespace: dict[str, Any]) -> str:
    length = f"type(v) is str and {1 if rule.non_empty else 0} <= len(v) <= {min(rule.max_len, limits.max_len)}"
    charset = {"tenant": "IS_TENANT(v)", "printable": "v.isascii() and v.isprintable()", "any": "v.isascii()"}
    return f"{length} and {charset[rule.charset]}"


def _text_reason(name: str, rule: FieldRule, limits: _Limits) -> _Problem:
    def problem(value: object) -> None:
        _text_problem(name, value, limits.max_len, required=not rule.optional, printable=rule.charset == "printable")

    return problem


def _text_problem(field: str, value: object, max_len: int, *, required: bool, printable: bool = False) -> None:
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
    if printable and has_control(value):
        raise InvalidEvent("control_character", field, f"{field} holds a control character")


def _accept_choice(name: str, rule: FieldRule, _limits: _Limits, namespace: dict[str, Any]) -> str:
    namespace[f"CHOICES_{name}"] = rule.choices
    return f"isinstance(v, str) and v in CHOICES_{name}"


def _accept_flag(_name: str, _rule: FieldRule, _limits: _Limits, _namespace: dict[str, Any]) -> str:
    return "type(v) is bool"


def _flag_reason(name: str, _rule: FieldRule, _limits: _Limits) -> _Problem:
    def problem(_value: object) -> NoReturn:
        raise InvalidEvent("bad_type", name, f"{name} must be a boolean")

    return problem


def _accept_labels(_name: str, rule: FieldRule, limits: _Limits, _namespace: dict[str, Any]) -> str:
    size = min(rule.max_len, limits.max_len)
    pair = f"type(k) is str and type(x) is str and 0 < len(k) <= {size} and len(x) <= {size} and (k + x).isascii()"
    return f"type(v) is dict and (not v or len(v) <= {rule.max_items} and all({pair} for k, x in v.items()))"


def _labels_reason(name: str, rule: FieldRule, limits: _Limits) -> _Problem:
    def problem(value: object) -> None:
        if type(value) is not dict or len(value) > rule.max_items:
            raise InvalidEvent(
                "bad_attributes", name, f"{name} must be a map of at most {rule.max_items} string labels"
            )
        for key, label in value.items():
            if key == "":
                raise InvalidEvent("bad_attributes", name, "attribute keys must be non-empty")
            _text_problem(name, key, limits.max_len, required=True)
            if label is None:
                raise InvalidEvent("bad_type", name, f"attribute {key!r} has no value (null)")
            _text_problem(name, label, limits.max_len, required=False)

    return problem


#: Per rule kind: the acceptance test's source (an expression of ``v``; constants it needs go into the namespace).
_ACCEPT: dict[str, Callable[[str, FieldRule, _Limits, dict[str, Any]], str]] = {
    "uuid": _accept_uuid,
    "text": _accept_text,
    "count": _accept_count,
    "choice": _accept_choice,
    "flag": _accept_flag,
    "labels": _accept_labels,
}
_PROBLEM: dict[str, Callable[[str, FieldRule, _Limits], _Problem]] = {
    "uuid": _refuse_all,
    "text": _text_reason,
    "count": _count_reason,
    "choice": _refuse_all,
    "flag": _flag_reason,
    "labels": _labels_reason,
}
