"""Avro binary encoding and decoding specialised to the UsageEvent schema — the codec's fast path.

Why not fastavro alone: fastavro is generic. Writing, it takes dicts and, for each of the ~20 ``["null", X]``
unions, works out which branch a value fits; reading, it builds a dict per record that then has to become a
UsageEvent. Here the per-field work is chosen once from the schema: the encoder reads values straight off the
dataclass (caching the encoded form of repeated low-cardinality strings), and the decoder is Python source
generated from the schema at start-up that reads the bytes into the UsageEvent constructor's arguments.
Both are two to three times cheaper than fastavro on these records; the tests prove the bytes identical to
fastavro's in both directions and fuzz the decoder with mutated messages.

Only the types the usage schemas use are supported (long, int, string, boolean, enum, map<string>,
``["null", X]``); anything else fails at construction, and the codec then uses fastavro. Data written with a
*different* writer schema (older or newer producers, registry mode) is always read through fastavro's schema
resolution.

The decoder is strict where Avro is: a truncated body, a union or enum index out of range, a bad boolean byte,
invalid UTF-8 or trailing bytes raise :class:`AvroDecodeError` (or an IndexError/UnicodeDecodeError the codec
treats the same way) — never a wrong event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from costplane.publisher.event import UsageEvent


class AvroDecodeError(ValueError):
    """The bytes are not a valid encoding of the record."""


class SpecialisedCodec:
    """Encoder and decoder for UsageEvent and UsageBatch bodies, built from the *plain* event schema.

    ``event_schema`` must have its logical types stripped (``occurred_at`` as plain long) and its fields in the
    dataclass's order. One instance per UsageCodec: it owns a small bounded string cache.
    """

    #: Fields unique per event (or nearly): caching their encoded form would only churn the cache.
    _UNCACHED = frozenset({"event_id", "request_id", "session_id", "content_hash"})
    _CACHE_MAX = 4096

    def __init__(self, event_schema: dict[str, Any]) -> None:
        self._cache: dict[str, bytes] = {}
        self._plan: list[tuple[str, Callable[[Any], bytes]]] = [
            (f["name"], self._writer(f["type"], cached=f["name"] not in self._UNCACHED))
            for f in event_schema["fields"]
        ]
        self._read_event = _generate_reader([f["type"] for f in event_schema["fields"]])

    # -- encoding --------------------------------------------------------------------------------------------
    def encode_event(self, ev: UsageEvent) -> bytes:
        try:
            return b"".join([write(getattr(ev, name)) for name, write in self._plan])
        except (KeyError, AttributeError, TypeError) as exc:
            raise ValueError(f"event {getattr(ev, 'event_id', '?')!r} does not fit the schema: "
                             f"{type(exc).__name__}: {exc}") from exc

    def encode_batch(self, tenant: str, events: Sequence[UsageEvent]) -> bytes:
        if not isinstance(tenant, str):
            raise ValueError(f"tenant {tenant!r} is not a string")
        parts = [self._string_cached(tenant)]
        if events:
            parts.append(_long(len(events)))
            parts.extend(self.encode_event(ev) for ev in events)
        parts.append(b"\x00")
        return b"".join(parts)

    # -- decoding --------------------------------------------------------------------------------------------
    def decode_event(self, buf: bytes) -> UsageEvent:
        event, pos = self._read_event(buf, 0)
        if pos != len(buf):
            raise AvroDecodeError(f"{len(buf) - pos} trailing bytes after the UsageEvent record")
        return event

    def decode_batch(self, buf: bytes) -> tuple[str, list[UsageEvent]]:
        tenant, pos = _read_string(buf, 0)
        events: list[UsageEvent] = []
        read = self._read_event
        while True:
            count, pos = _read_long(buf, pos)
            if count == 0:
                break
            if count < 0:  # a block with its byte size: skip the size
                count = -count
                _, pos = _read_long(buf, pos)
            for _ in range(count):
                event, pos = read(buf, pos)
                events.append(event)
        if pos != len(buf):
            raise AvroDecodeError(f"{len(buf) - pos} trailing bytes after the UsageBatch record")
        return tenant, events

    # -- building --------------------------------------------------------------------------------------------
    def _string_cached(self, value: str) -> bytes:
        encoded = self._cache.get(value)
        if encoded is None:
            encoded = _string(value)
            if len(self._cache) >= self._CACHE_MAX:
                self._cache.clear()  # bounded memory; the hot values come straight back
            self._cache[value] = encoded
        return encoded

    def _writer(self, schema: Any, *, cached: bool) -> Callable[[Any], bytes]:
        kind = schema.get("type") if isinstance(schema, dict) else schema
        if isinstance(schema, dict) and "logicalType" in schema:
            raise ValueError(f"logical type {schema['logicalType']} must be stripped first")
        if kind == "long":
            return _long
        if kind == "int":
            return _int
        if kind == "string":
            return self._string_cached if cached else _string
        if kind == "boolean":
            return _boolean
        if kind == "enum":
            return {symbol: _long(i) for i, symbol in enumerate(schema["symbols"])}.__getitem__
        if kind == "map" and schema["values"] == "string":
            key = self._string_cached

            def write_map(value: dict[str, str]) -> bytes:
                if not value:
                    return b"\x00"
                return b"".join([_long(len(value)), *[key(k) + key(v) for k, v in value.items()], b"\x00"])

            return write_map
        if isinstance(schema, list) and len(schema) == 2 and schema[0] == "null":
            inner = self._writer(schema[1], cached=cached)

            def write_optional(value: Any) -> bytes:
                return b"\x00" if value is None else b"\x02" + inner(value)

            return write_optional
        raise ValueError(f"no specialised Avro writer for {schema!r}")


_ONE_BYTE = tuple(bytes([i << 1]) for i in range(64))


def _long(value: int) -> bytes:
    """Zig-zag varint of an Avro long."""
    if type(value) is int and 0 <= value < 64:
        return _ONE_BYTE[value]
    if not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise ValueError(f"{value!r} is not an Avro long")
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int(value: int) -> bytes:
    if not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise ValueError(f"{value!r} is not an Avro int")
    return _long(value)


def _string(value: str) -> bytes:
    raw = value.encode()
    return _long(len(raw)) + raw


def _boolean(value: bool) -> bytes:
    if type(value) is not bool:
        raise ValueError(f"{value!r} is not a boolean")
    return b"\x01" if value else b"\x00"


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        if shift > 63:
            raise AvroDecodeError("varint longer than 10 bytes")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    size, pos = _read_long(buf, pos)
    end = pos + size
    if size < 0 or end > len(buf):
        raise AvroDecodeError("string length out of bounds")
    return buf[pos:end].decode(), end


# -- the generated reader ------------------------------------------------------------------------------------
# Inlined varints are what make it fast: a function call per field would cost as much as fastavro.

def _varint(indent: str, target: str) -> list[str]:
    return [
        f"{indent}b = buf[pos]; pos += 1",
        f"{indent}if b < 0x80:",
        f"{indent}    {target} = (b >> 1) ^ -(b & 1)",
        f"{indent}else:",
        f"{indent}    {target}, pos = read_long(buf, pos - 1)",
    ]


def _string_lines(indent: str, target: str) -> list[str]:
    return [*_varint(indent, "size"),
            f"{indent}end = pos + size",
            f"{indent}if size < 0 or end > limit: raise Bad('string length out of bounds')",
            f"{indent}{target} = buf[pos:end].decode(); pos = end"]


def _field_lines(schema: Any, indent: str, target: str, consts: dict[str, Any]) -> list[str]:
    kind = schema.get("type") if isinstance(schema, dict) else schema
    if isinstance(schema, dict) and "logicalType" in schema:
        raise ValueError(f"logical type {schema['logicalType']} must be stripped first")
    if kind in ("long", "int"):
        return _varint(indent, target)
    if kind == "string":
        return _string_lines(indent, target)
    if kind == "boolean":
        return [f"{indent}b = buf[pos]; pos += 1",
                f"{indent}if b > 1: raise Bad('bad boolean byte')",
                f"{indent}{target} = b == 1"]
    if kind == "enum":
        name = f"SYMBOLS_{len(consts)}"
        consts[name] = tuple(schema["symbols"])
        return [*_varint(indent, "index"),
                f"{indent}if not 0 <= index < {len(schema['symbols'])}: raise Bad('enum index out of range')",
                f"{indent}{target} = {name}[index]"]
    if kind == "map" and schema["values"] == "string":
        inner = indent + "        "
        return [f"{indent}{target} = {{}}",
                *_varint(indent, "count"),
                f"{indent}while count:",
                f"{indent}    if count < 0:",
                f"{indent}        count = -count",
                *_varint(inner, "_size"),
                f"{indent}    for _ in range(count):",
                *_string_lines(inner, "key"),
                *_string_lines(inner, "value"),
                f"{inner}{target}[key] = value",
                *_varint(indent + "    ", "count")]
    if isinstance(schema, list) and len(schema) == 2 and schema[0] == "null":
        return [f"{indent}b = buf[pos]; pos += 1",
                f"{indent}if b == 0:",
                f"{indent}    {target} = None",
                f"{indent}elif b == 2:",
                *_field_lines(schema[1], indent + "    ", target, consts),
                f"{indent}else:",
                f"{indent}    raise Bad('union index out of range')"]
    raise ValueError(f"no specialised Avro reader for {schema!r}")


def _generate_reader(field_types: list[Any]) -> Callable[[bytes, int], tuple[UsageEvent, int]]:
    consts: dict[str, Any] = {}
    lines = ["def read_event(buf, pos):", "    limit = len(buf)"]
    for i, schema in enumerate(field_types):
        lines += _field_lines(schema, "    ", f"v{i}", consts)
    lines.append(f"    return Event({', '.join(f'v{i}' for i in range(len(field_types)))}), pos")
    namespace: dict[str, Any] = {"Event": UsageEvent, "Bad": AvroDecodeError, "read_long": _read_long, **consts}
    exec(compile("\n".join(lines), "<costplane usage_event reader>", "exec"), namespace)  # noqa: S102 - from our schema
    reader: Callable[[bytes, int], tuple[UsageEvent, int]] = namespace["read_event"]
    return reader
