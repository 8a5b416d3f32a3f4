"""Usage history from files → usage events, for ``costplane import``: JSON lines, OpenAI usage CSV, LiteLLM logs.

Pure parsing (no I/O beyond the lines given): every line is a validated :class:`UsageEvent` or a
:class:`Rejected` with its line number and reason. An event without an ``event_id`` gets one derived from what the
line identifies (a UUIDv5), so importing the same file twice yields the same ids and the sink counts each once.
"""

from __future__ import annotations

import csv
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from costplane.publisher.event import UsageEvent
from costplane.publisher.jsonio import event_from_json_dict
from costplane.publisher.validation import InvalidEvent, validate_event

FORMATS = ("jsonl", "openai-usage-csv", "litellm-spendlogs")
_NAMESPACE = uuid.UUID("8f6d8a52-3c57-4c1e-9d2b-6f0d5b7a1e44")
_NANOS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that is not an event: its 1-based number, a stable reason code and a message."""

    line: int
    reason: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason, "message": self.message}


def derived_id(*parts: object) -> str:
    """A UUIDv5 of the parts: the same source row always gets the same event_id."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join("" if p is None else str(p) for p in parts)))


def _millis(value: Any, field: str = "occurred_at") -> int:
    """Epoch seconds (OpenAI's exports), epoch millis, or an ISO-8601 string → epoch millis."""
    if isinstance(value, bool) or value is None or value == "":
        raise InvalidEvent("bad_timestamp", field, f"{field} is missing")
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().replace(".", "", 1).isdigit()):
        number = float(value)
        return int(number * 1000) if number < 100_000_000_000 else int(number)  # seconds before year 5138
    text = str(value).strip().replace("Z", "+00:00")
    if " " in text and "T" not in text:
        text = text.replace(" ", "T", 1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEvent("bad_timestamp", field, f"{field} {value!r} is not a time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _count(row: dict[str, Any], key: str) -> int:
    value = row.get(key)
    if value is None or value == "":
        return 0
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidEvent("bad_type", key, f"{key} {value!r} is not a number") from None
    if not number.is_integer():
        raise InvalidEvent("bad_type", key, f"{key} {value!r} is not a whole number")
    return int(number)  # negatives are refused by validation, with the reason negative_tokens


def _jsonl(line: str, tenant: str | None) -> UsageEvent:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise InvalidEvent("bad_json", None, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent("bad_shape", None, "a line must be a JSON object")
    if tenant and not data.get("tenant"):
        data["tenant"] = tenant
    if not data.get("event_id"):
        data["event_id"] = derived_id("jsonl", json.dumps(data, sort_keys=True, default=str))
    data.setdefault("request_id", data["event_id"])
    data.setdefault("attempt", 1)
    data.setdefault("status", "ok")
    return event_from_json_dict(data)


def _openai_row(row: dict[str, Any], tenant: str | None) -> UsageEvent:
    """One bucket of OpenAI's completions usage export: ``input_tokens`` includes ``input_cached_tokens``."""
    if not tenant:
        raise InvalidEvent("missing_tenant", "tenant", "openai-usage-csv needs --tenant")
    start = row.get("start_time") or row.get("start_time_iso") or row.get("timestamp")
    occurred_at = _millis(start, "start_time")
    model = (row.get("model") or "").strip()
    if not model:
        raise InvalidEvent("missing_field", "model", "the row has no model")
    inp, cached, out = _count(row, "input_tokens"), _count(row, "input_cached_tokens"), _count(row, "output_tokens")
    if cached > inp >= 0:
        raise InvalidEvent("bad_value", "input_cached_tokens", "input_cached_tokens exceeds input_tokens")
    attrs = {k: str(row[k]) for k in ("project_id", "api_key_id", "num_model_requests") if row.get(k)}
    batch = str(row.get("batch") or "").strip().lower() in ("true", "1")
    key = (
        "openai-usage-csv",
        tenant,
        occurred_at,
        model,
        row.get("project_id"),
        row.get("user_id"),
        row.get("api_key_id"),
        batch,
    )
    event_id = derived_id(*key)
    event = UsageEvent(
        event_id=event_id,
        occurred_at=occurred_at,
        tenant=tenant,
        provider="openai",
        model=model,
        request_id=event_id,
        attempt=1,
        status="ok",
        input_tokens=inp - cached,
        cached_input_tokens=cached,
        output_tokens=out,
        operation="chat",
        service_tier="batch" if batch else None,
        user_id=row.get("user_id") or None,
        attributes=attrs,
    )
    validate_event(event)
    return event


def _litellm_row(row: dict[str, Any], tenant: str | None) -> UsageEvent:
    """A row of LiteLLM's ``LiteLLM_SpendLogs`` (JSON object or CSV row)."""
    request_id = str(row.get("request_id") or "").strip()
    if not request_id:
        raise InvalidEvent("missing_field", "request_id", "the row has no request_id")
    metadata = row.get("metadata")
    if isinstance(metadata, str) and metadata.strip().startswith("{"):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            metadata = None
    meta: dict[str, Any] = metadata if isinstance(metadata, dict) else {}
    model = str(row.get("model") or row.get("model_group") or "").strip()
    provider = str(row.get("custom_llm_provider") or "").strip()
    if "/" in model and not provider:
        provider, model = model.split("/", 1)
    if not model:
        raise InvalidEvent("missing_field", "model", "the row has no model")
    team = row.get("team_id") or meta.get("user_api_key_team_id")
    chosen_tenant = tenant or meta.get("user_api_key_org_id") or team
    if not chosen_tenant:
        raise InvalidEvent("missing_tenant", "tenant", "no --tenant and the row has no team or organisation")
    status = str(row.get("status") or "success").strip().lower()
    tags = row.get("request_tags")
    if isinstance(tags, str) and tags.startswith("["):
        try:
            tags = json.loads(tags)
        except ValueError:
            tags = None
    attrs: dict[str, str] = {"litellm_request_id": request_id}
    if isinstance(tags, list) and tags:
        attrs["tags"] = ",".join(str(t) for t in tags)
    spend = row.get("spend")
    if spend not in (None, ""):
        attrs["litellm_spend_usd"] = str(spend)
    event = UsageEvent(
        event_id=derived_id("litellm", request_id),
        occurred_at=_millis(row.get("startTime"), "startTime"),
        tenant=str(chosen_tenant),
        provider=provider or "openai",
        model=model,
        request_id=str(row.get("session_id") or request_id),
        attempt=1,
        status="ok" if status in ("success", "ok", "") else "error",
        input_tokens=_count(row, "prompt_tokens"),
        output_tokens=_count(row, "completion_tokens"),
        user_id=str(row.get("end_user") or row.get("user") or "") or None,
        team=str(team) if team else None,
        result_cache_hit=str(row.get("cache_hit")).strip().lower() == "true" or None,
        attributes=attrs,
    )
    validate_event(event)
    return event


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, row, raw) of a CSV with a header, or of JSON lines (detected from the first line)."""
    it = iter(lines)
    first = ""
    skipped = 0
    for first in it:
        if first.strip():
            break
        skipped += 1
    if not first.strip():
        return
    if first.lstrip().startswith("{"):
        for n, line in enumerate(itertools.chain([first], it), start=skipped + 1):
            if line.strip():
                yield n, None, line
        return
    reader = csv.reader(itertools.chain([first], it))
    header = next(reader)
    for values in reader:
        n = reader.line_num + skipped
        if not values or not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            yield n, {"__bad__": f"{len(values)} columns where the header has {len(header)}"}, ""
        else:
            yield n, dict(zip(header, values, strict=True)), ""


def parse_history(lines: Iterable[str], fmt: str, *, tenant: str | None = None) -> Iterator[UsageEvent | Rejected]:
    """Each data line of ``lines`` in format ``fmt`` as a validated event or the reason it is not one."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt == "jsonl":
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield _guarded(number, lambda line=line: _jsonl(line, tenant))
        return
    convert = _openai_row if fmt == "openai-usage-csv" else _litellm_row
    for number, row, raw in _rows(lines):
        if row is not None and "__bad__" in row:
            yield Rejected(number, "bad_csv", str(row["__bad__"]))
            continue
        if row is None:
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                yield Rejected(number, "bad_json", f"not JSON: {exc}")
                continue
            if not isinstance(parsed, dict):
                yield Rejected(number, "bad_shape", "a line must be a JSON object")
                continue
            row = parsed
        yield _guarded(number, lambda row=row: convert(row, tenant))


def _guarded(number: int, build: Any) -> UsageEvent | Rejected:
    try:
        event: UsageEvent = build()
        return event
    except InvalidEvent as exc:
        return Rejected(number, exc.reason, exc.message)
    except (TypeError, ValueError) as exc:
        return Rejected(number, "bad_shape", str(exc))
