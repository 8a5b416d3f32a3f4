"""OTLP trace exports → usage events: one per span that records a GenAI model call (the GenAI semantic conventions).

Pure decoding and mapping; the HTTP side is :mod:`.otlp_server`. Both OTLP encodings are read: protobuf
(``application/x-protobuf``, through ``opentelemetry-proto``, imported when the first protobuf body arrives) and
JSON (``application/json``, OTLP's own JSON mapping: hex ids, ``intValue`` as strings), optionally gzip-compressed.

Token counts follow the conventions: ``gen_ai.usage.input_tokens`` counts every input token *including* cache
reads and writes (``gen_ai.usage.cache_read.input_tokens``, ``gen_ai.usage.cache_creation.input_tokens``) and
``gen_ai.usage.output_tokens`` includes ``gen_ai.usage.reasoning.output_tokens``; the event's buckets are disjoint,
so those are subtracted. The ``event_id`` is a UUIDv5 of the trace and span ids: a re-sent export yields the same
ids, and the sink counts each span once.
"""

from __future__ import annotations

import gzip
import json
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from costplane.publisher.event import UsageEvent
from costplane.publisher.validation import InvalidEvent, validate_event

MAX_BODY_BYTES = 32 * 1024 * 1024
_NAMESPACE = uuid.UUID("5d0c1c2e-7b8a-4d6e-9f43-2a1b3c4d5e6f")
#: ``gen_ai.operation.name`` values that are billed model calls, and the event operation each one is.
MODEL_OPERATIONS = {
    "chat": "chat",
    "text_completion": "completion",
    "generate_content": "chat",
    "embeddings": "embedding",
    "responses": "chat",
}


class BadRequest(ValueError):
    """An export the receiver cannot read; its message is the 400 answer's reason."""


@dataclass(frozen=True, slots=True)
class AttributeMap:
    """Where tenant, feature, user, session, team and env come from: attribute keys tried in order, span
    attributes before resource attributes; ``default_tenant`` when none is found."""

    tenant: tuple[str, ...] = ("costplane.tenant", "tenant.id")
    feature: tuple[str, ...] = ("costplane.feature", "service.name")
    user_id: tuple[str, ...] = ("costplane.user_id", "user.id", "enduser.id")
    session_id: tuple[str, ...] = ("costplane.session_id", "session.id", "gen_ai.conversation.id")
    team: tuple[str, ...] = ("costplane.team",)
    env: tuple[str, ...] = ("costplane.env", "deployment.environment.name", "deployment.environment")
    default_tenant: str | None = "default"


@dataclass(slots=True)
class Span:
    """The parts of one exported span the mapping reads."""

    trace_id: bytes
    span_id: bytes
    name: str
    start_ns: int
    end_ns: int
    error: bool
    attributes: dict[str, Any]
    resource: dict[str, Any]


@dataclass(slots=True)
class ExportResult:
    """What one export became: events, how many spans were not GenAI calls, and the rejected ones' reasons."""

    events: list[UsageEvent] = field(default_factory=list)
    ignored: int = 0
    rejected: list[str] = field(default_factory=list)


def decompress(body: bytes, encoding: str) -> bytes:
    """Undo ``Content-Encoding`` (gzip or deflate), refusing bodies that inflate past :data:`MAX_BODY_BYTES`."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r} (gzip, deflate or none)")
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        out = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise BadRequest(f"body is not valid {encoding}: {exc}") from None
    if len(out) > MAX_BODY_BYTES:
        raise BadRequest(f"body inflates past {MAX_BODY_BYTES} bytes")
    return out


# -- decoding ---------------------------------------------------------------------------------------------------


def _any_value_json(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return None
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            raise BadRequest(f"intValue {value['intValue']!r} is not an integer") from None
    if "arrayValue" in value:
        return tuple(_any_value_json(v) for v in (value["arrayValue"] or {}).get("values", []) or [])
    return None


def _attrs_json(items: Any) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise BadRequest("attributes must be a list of {key, value}")
    return {str(i.get("key")): _any_value_json(i.get("value")) for i in items if isinstance(i, Mapping)}


def _hex_id(value: Any, size: int, name: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value or ""))
    except ValueError:
        raise BadRequest(f"{name} {value!r} is not hex") from None
    if len(raw) != size:
        raise BadRequest(f"{name} must be {size} bytes, got {len(raw)}")
    return raw


def spans_from_json(body: bytes) -> list[Span]:
    """Spans of an OTLP/JSON ``ExportTraceServiceRequest``."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("body must be a JSON object with resourceSpans")
    out: list[Span] = []
    try:
        for rs in doc.get("resourceSpans") or []:
            resource = _attrs_json((rs.get("resource") or {}).get("attributes"))
            for ss in rs.get("scopeSpans") or []:
                for s in ss.get("spans") or []:
                    status = s.get("status") or {}
                    code = status.get("code")
                    out.append(
                        Span(
                            _hex_id(s.get("traceId"), 16, "traceId"),
                            _hex_id(s.get("spanId"), 8, "spanId"),
                            str(s.get("name") or ""),
                            int(s.get("startTimeUnixNano") or 0),
                            int(s.get("endTimeUnixNano") or 0),
                            code in (2, "STATUS_CODE_ERROR"),
                            _attrs_json(s.get("attributes")),
                            resource,
                        )
                    )
    except (AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest(f"not an OTLP trace export: {exc}") from None
    return out


def _any_value_pb(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_any_value_pb(v) for v in value.array_value.values)
    if kind in ("kvlist_value", "bytes_value"):
        return None
    return getattr(value, kind)


def spans_from_protobuf(body: bytes) -> list[Span]:
    """Spans of a protobuf ``ExportTraceServiceRequest``."""
    try:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        from opentelemetry.proto.trace.v1.trace_pb2 import Status
    except ImportError:
        raise BadRequest("this receiver reads JSON only: protobuf bodies need costplane[otlp] installed") from None

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise BadRequest(f"body is not an OTLP protobuf export: {exc}") from None
    out: list[Span] = []
    for rs in request.resource_spans:
        resource = {a.key: _any_value_pb(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    Span(
                        bytes(s.trace_id),
                        bytes(s.span_id),
                        s.name,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        s.status.code == Status.STATUS_CODE_ERROR,
                        {a.key: _any_value_pb(a.value) for a in s.attributes},
                        resource,
                    )
                )
    return out


# -- mapping ----------------------------------------------------------------------------------------------------


def span_event_id(trace_id: bytes, span_id: bytes) -> str:
    """The event id of a span: the same trace and span ids always give the same UUID."""
    return str(uuid.uuid5(_NAMESPACE, trace_id.hex() + span_id.hex()))


def _pick(span: Span, keys: Sequence[str]) -> str | None:
    for source in (span.attributes, span.resource):
        for key in keys:
            value = source.get(key)
            if value not in (None, ""):
                return str(value)
    return None


def _tokens(attrs: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = attrs.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise InvalidEvent("bad_type", key, f"{key} {value!r} is not a token count")
        if value < 0:
            raise InvalidEvent("negative_tokens", key, f"{key} is {value}; counts are never negative")
        return int(value)
    return None


def _status(span: Span) -> str:
    if not span.error:
        return "ok"
    kind = str(span.attributes.get("error.type") or "").lower()
    if "ratelimit" in kind or "rate_limit" in kind or kind == "429":
        return "rate_limited"
    if "timeout" in kind:
        return "timeout"
    if "cancel" in kind:
        return "cancelled"
    return "error"


def span_to_event(span: Span, mapping: AttributeMap) -> UsageEvent | None:
    """The usage event of a GenAI model-call span, None for any other span; raises InvalidEvent for a bad one."""
    attrs = span.attributes
    operation = attrs.get("gen_ai.operation.name")
    provider = attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system")
    if not isinstance(operation, str) or operation not in MODEL_OPERATIONS or not provider:
        return None
    total_in = _tokens(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens") or 0
    total_out = _tokens(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens") or 0
    cache_read = _tokens(attrs, "gen_ai.usage.cache_read.input_tokens") or 0
    cache_write = _tokens(attrs, "gen_ai.usage.cache_creation.input_tokens") or 0
    reasoning = min(_tokens(attrs, "gen_ai.usage.reasoning.output_tokens") or 0, total_out)
    cache_read = min(cache_read, total_in)
    cache_write = min(cache_write, total_in - cache_read)
    model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
    tenant = _pick(span, mapping.tenant) or mapping.default_tenant
    if not tenant:
        raise InvalidEvent("missing_tenant", "tenant", f"no tenant attribute ({', '.join(mapping.tenant)})")
    event_id = span_event_id(span.trace_id, span.span_id)
    max_tokens = attrs.get("gen_ai.request.max_tokens")
    event = UsageEvent(
        event_id=event_id,
        occurred_at=(span.end_ns or span.start_ns) // 1_000_000,
        tenant=tenant,
        provider=str(provider),
        model=str(model or "unknown"),
        request_id=event_id,
        attempt=1,
        status=_status(span),
        input_tokens=total_in - cache_read - cache_write,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=total_out - reasoning,
        reasoning_tokens=reasoning,
        operation=MODEL_OPERATIONS[operation],
        user_id=_pick(span, mapping.user_id),
        team=_pick(span, mapping.team),
        feature=_pick(span, mapping.feature),
        env=_pick(span, mapping.env),
        session_id=_pick(span, mapping.session_id),
        max_tokens=int(max_tokens)
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 0
        else None,
        latency_ms=max(0, (span.end_ns - span.start_ns) // 1_000_000) if span.end_ns and span.start_ns else None,
        attributes={"otel.trace_id": span.trace_id.hex(), "otel.span_id": span.span_id.hex()},
    )
    validate_event(event)
    return event


def map_export(spans: Sequence[Span], mapping: AttributeMap) -> ExportResult:
    """Every span of an export: events, ignored (not GenAI model calls) and rejected (with their reasons)."""
    result = ExportResult()
    for span in spans:
        try:
            event = span_to_event(span, mapping)
        except InvalidEvent as exc:
            result.rejected.append(f"span {span.span_id.hex()}: {exc.reason}: {exc.message}")
            continue
        if event is None:
            result.ignored += 1
        else:
            result.events.append(event)
    return result
