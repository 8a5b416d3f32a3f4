"""Usage events as JSON objects with the schema's field names (replay files, examples, dead-letter tools).

``occurred_at`` is accepted as epoch milliseconds or as an ISO-8601 string (a naive one is taken as UTC) and is
written back as epoch milliseconds. Unknown keys are refused: a typo in a field name must not silently drop data.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from costplane.publisher.event import UsageEvent, to_millis
from costplane.publisher.validation import InvalidEvent, validate_event

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(UsageEvent))
_REQUIRED = ("event_id", "occurred_at", "tenant", "provider", "model", "request_id", "attempt", "status")


def _timestamp(value: object) -> int:
    if isinstance(value, bool):
        raise InvalidEvent("bad_timestamp", "occurred_at", "occurred_at must be epoch millis or ISO-8601")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():  # "²".isdigit() is True too; int() would refuse it
            return int(text)
        try:
            return int(to_millis(datetime.fromisoformat(text.replace("Z", "+00:00"))))
        except ValueError:
            pass
    raise InvalidEvent("bad_timestamp", "occurred_at", f"occurred_at {value!r} is neither epoch millis nor ISO-8601")


def event_from_json_dict(data: dict[str, Any], *, validate: bool = True) -> UsageEvent:
    """Build (and by default validate) a UsageEvent from a schema-shaped JSON object."""
    if not isinstance(data, dict):
        raise InvalidEvent("bad_shape", None, "a usage event must be a JSON object")
    unknown = sorted(k for k in data if k not in FIELD_NAMES and not k.startswith("_"))
    if unknown:
        raise InvalidEvent("unknown_field", unknown[0], f"unknown field(s): {', '.join(unknown)}")
    missing = [k for k in _REQUIRED if data.get(k) is None]
    if missing:
        reason = "missing_tenant" if missing[0] == "tenant" else "missing_field"
        raise InvalidEvent(reason, missing[0], f"required field(s) missing: {', '.join(missing)}")
    values = {k: v for k, v in data.items() if k in FIELD_NAMES}
    values["occurred_at"] = _timestamp(values["occurred_at"])
    attributes = values.get("attributes")
    if attributes is None:
        values["attributes"] = {}
    event = UsageEvent(**values)
    if validate:
        validate_event(event)
    return event


def event_to_json_dict(event: UsageEvent, *, drop_nulls: bool = False) -> dict[str, Any]:
    """The event as a JSON-ready dict with schema field names (``occurred_at`` as epoch millis)."""
    data = {name: getattr(event, name) for name in FIELD_NAMES}
    data["attributes"] = dict(event.attributes)
    if drop_nulls:
        data = {k: v for k, v in data.items() if v is not None}
    return data
