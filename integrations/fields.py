"""Attributes (from ``instrument(...)`` and ``costplane.attributes(...)``) → usage-event fields and a guard scope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Attribute names that are event fields of their own; every other attribute goes into the ``attributes`` map.
EVENT_FIELDS = ("tenant", "user_id", "team", "feature", "env", "session_id", "turn", "plan", "service_tier")
#: The event fields a budget scope matches on (the guard calls ``user_id`` ``user``).
SCOPE_FIELDS = ("tenant", "team", "feature", "env", "plan", "user_id")
_MAX_ATTRIBUTES = 64
_MAX_LEN = 512


def event_fields(base: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """Event fields of one call: ``current`` (the context's) over ``base`` (the client's); ``user`` means
    ``user_id``; ``turn`` must be an integer (else it is kept as an attribute); the rest become string attributes.
    """
    merged = {**base, **current}
    if "user" in merged and "user_id" not in merged:
        merged["user_id"] = merged.pop("user")
    fields: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in merged.items():
        if value is None:
            continue
        if key == "turn":
            if type(value) is int:
                fields["turn"] = value
            elif isinstance(value, str) and value.isdigit():
                fields["turn"] = int(value)
            else:
                extra["turn"] = str(value)[:_MAX_LEN]
        elif key in EVENT_FIELDS:
            fields[key] = str(value)
        elif key == "attributes" and isinstance(value, Mapping):
            for k, v in value.items():
                extra[str(k)[:_MAX_LEN]] = str(v)[:_MAX_LEN]
        elif len(extra) < _MAX_ATTRIBUTES:
            extra[str(key)[:_MAX_LEN]] = str(value)[:_MAX_LEN]
    if extra:
        fields["attributes"] = dict(list(extra.items())[:_MAX_ATTRIBUTES])
    return fields


def guard_scope(fields: Mapping[str, Any]) -> dict[str, str | None]:
    """The budget scope of a call with these event fields."""
    scope: dict[str, str | None] = {k: str(fields[k]) for k in SCOPE_FIELDS if fields.get(k) is not None}
    if "user_id" in scope:
        scope["user"] = scope.pop("user_id")
    return scope
