"""Avro binary encoding and decoding specialised to the UsageEvent schema — the codec's fast path.

Why not fastavro alone: measured, it does not meet the publisher's target. fastavro is generic: writing, it takes
dicts and, for each of the ~20 ``["null", X]`` unions, works out which branch a value fits; reading, it builds a
dict per record that then has to become a UsageEvent. Its encoding alone costs about 14 µs per event here, and a
bare fastavro batch encoder with a bare producer stays below 50 000 events/s (``bench.bench_publisher``'s floor
rows); this codec costs about 2.5 µs. Here the per-field work is chosen once: :func:`generate`, the one
generator, turns the schema and the validation rules (:data:`validation.RULES`) into Python source for the reader
and the two writers at start-up. A writer's body is a single tuple of inline expressions, one per field, read
straight off the dataclass: small longs and every union tag come from constant tables, repeated low-cardinality
strings and the high bytes of large longs (timestamps) from small bounded caches, each checked against the
field's rule; any other value goes to the writer's fallback. The plain writer's fallback encodes whatever Avro
can hold; the checked writer's (the publisher's emit: validate and encode in one pass) refuses, leaving the
event to ``validate_event``. The reader reads the bytes into the UsageEvent constructor's arguments. The tests
prove the bytes identical to fastavro's in both directions, fuzz the writers with random values of every field
and the decoder with mutated messages.

Only the types the usage schemas use are supported (long, int, string, boolean, enum, map<string>,
``["null", X]``); anything else fails at construction, so a schema change that needs another type stops the
codec at start-up instead of encoding wrongly. Data written with a *different* writer schema (older or newer
producers, registry mode) is always read through fastavro's schema resolution.

The decoder is strict where Avro is: a truncated body, a union or enum index out of range, a bad boolean byte,
invalid UTF-8 or trailing bytes raise :class:`AvroDecodeError` (or an IndexError/UnicodeDecodeError the codec
treats the same way) — never a wrong event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from costplane.publisher.event import UsageEvent
from costplane.publisher.validation import EVENT_ID_PATTERN, RULES, FieldRule, acceptance


class AvroDecodeError(ValueError):
    """The bytes are not a valid encoding of the record."""


class SpecialisedCodec:
    """Encoder and decoder for UsageEvent and UsageBatch bodies, built from the *plain* event schema.

    ``event_schema`` must have its logical types stripped (``occurred_at`` as plain long) and its fields in the
    dataclass's order. One instance per UsageCodec: it owns small bounded caches (one per field).
    """

    #: Fields unique per event (or nearly): caching their encoded form would only churn the cache.
    _UNCACHED = frozenset({"event_id", "request_id", "session_id", "content_hash"})
    _CACHE_MAX = 1024  # per string field; the attribute map's keys and values share one of 4 × this

    def __init__(self, event_schema: dict[str, Any]) -> None:
        self._cache: dict[str, bytes] = {}  # batch tenants
        generated = generate(event_schema["fields"], RULES, cache_max=self._CACHE_MAX, uncached=self._UNCACHED)
        self._write_events = generated.write_events
        self._read_event = generated.read_event
        #: ``encode_valid_event(ev)``: ``ev``'s encoding when it keeps the field rules of
        #: :data:`validation.RULES`, checked on the way. None means "not decided here": the event breaks a rule,
        #: is not a UsageEvent, or holds an unusual value (non-ASCII text, say) that the fast path leaves to
        #: :func:`validate_event` and :meth:`encode_event`. The generated function itself, no wrapper around it.
        self.encode_valid_event = generated.write_checked

    # -- encoding --------------------------------------------------------------------------------------------
    def encode_event(self, ev: UsageEvent) -> bytes:
        return self._encode([], (ev,))

    def encode_batch(self, tenant: str, events: Sequence[UsageEvent]) -> bytes:
        if not isinstance(tenant, str):
            raise ValueError(f"tenant {tenant!r} is not a string")
        parts = [self._string_cached(tenant)]
        if events:
            parts.append(_long(len(events)))
            self._encode(parts, events)
        parts.append(b"\x00")
        return b"".join(parts)

    def batch_from_bodies(self, tenant: str, bodies: Sequence[bytes]) -> bytes:
        """A UsageBatch body from events already encoded one by one (``encode_event``/``encode_valid_event``)."""
        if not isinstance(tenant, str):
            raise ValueError(f"tenant {tenant!r} is not a string")
        if not bodies:
            return self._string_cached(tenant) + b"\x00"
        return b"".join([self._string_cached(tenant), _long(len(bodies)), *bodies, b"\x00"])

    def _encode(self, parts: list[bytes], events: Sequence[UsageEvent]) -> bytes:
        """Append the events' encodings to ``parts`` (one generated loop, no call per field) and join them."""
        try:
            self._write_events(events, parts)
        except (KeyError, AttributeError, TypeError) as exc:
            # The slow path only: name the event that does not fit, as a ValueError like the writers' own checks.
            culprit = next((ev for ev in events if not self._fits(ev)), None)
            raise ValueError(
                f"event {getattr(culprit, 'event_id', '?')!r} does not fit the schema: {type(exc).__name__}: {exc}"
            ) from exc
        return b"".join(parts)

    def _fits(self, ev: UsageEvent) -> bool:
        try:
            self._write_events((ev,), [])
        except (KeyError, AttributeError, TypeError, ValueError):
            return False
        return True

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
            if len(self._cache) >= 4 * self._CACHE_MAX:
                self._cache.clear()  # bounded memory; the hot values come straight back
            self._cache[value] = encoded
        return encoded


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: Encodings of the longs 0 … 8191 (one or two bytes): token counts, latencies and caps mostly fall in it.
_SMALL_MAX = 8192
_SMALL = tuple(_varint_bytes(i << 1) for i in range(_SMALL_MAX))
#: The same behind the ``["null", X]`` union's branch tag 1.
_SMALL_TAGGED = tuple(b"\x02" + b for b in _SMALL)
#: First byte of a non-negative long of two bytes or more, by ``value & 63`` (zig-zag doubles it; more follow).
_FIRST = tuple(bytes([(i << 1) | 0x80]) for i in range(64))
_FIRST_TAGGED = tuple(b"\x02" + b for b in _FIRST)


def _long(value: int) -> bytes:
    """Zig-zag varint of an Avro long."""
    if type(value) is int and 0 <= value < _SMALL_MAX:
        return _SMALL[value]
    if not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise ValueError(f"{value!r} is not an Avro long")
    return _varint_bytes((value << 1) ^ (value >> 63))


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
    return [
        *_varint(indent, "size"),
        f"{indent}end = pos + size",
        f"{indent}if size < 0 or end > limit: raise Bad('string length out of bounds')",
        f"{indent}{target} = buf[pos:end].decode(); pos = end",
    ]


def _field_lines(schema: Any, indent: str, target: str, consts: dict[str, Any]) -> list[str]:
    kind = schema.get("type") if isinstance(schema, dict) else schema
    if isinstance(schema, dict) and "logicalType" in schema:
        raise ValueError(f"logical type {schema['logicalType']} must be stripped first")
    if kind in ("long", "int"):
        return _varint(indent, target)
    if kind == "string":
        return _string_lines(indent, target)
    if kind == "boolean":
        return [
            f"{indent}b = buf[pos]; pos += 1",
            f"{indent}if b > 1: raise Bad('bad boolean byte')",
            f"{indent}{target} = b == 1",
        ]
    if kind == "enum":
        name = f"SYMBOLS_{len(consts)}"
        consts[name] = tuple(schema["symbols"])
        return [
            *_varint(indent, "index"),
            f"{indent}if not 0 <= index < {len(schema['symbols'])}: raise Bad('enum index out of range')",
            f"{indent}{target} = {name}[index]",
        ]
    if kind == "map" and schema["values"] == "string":
        inner = indent + "        "
        return [
            f"{indent}{target} = {{}}",
            *_varint(indent, "count"),
            f"{indent}while count:",
            f"{indent}    if count < 0:",
            f"{indent}        count = -count",
            *_varint(inner, "_size"),
            f"{indent}    for _ in range(count):",
            *_string_lines(inner, "key"),
            *_string_lines(inner, "value"),
            f"{inner}{target}[key] = value",
            *_varint(indent + "    ", "count"),
        ]
    if isinstance(schema, list) and len(schema) == 2 and schema[0] == "null":
        return [
            f"{indent}b = buf[pos]; pos += 1",
            f"{indent}if b == 0:",
            f"{indent}    {target} = None",
            f"{indent}elif b == 2:",
            *_field_lines(schema[1], indent + "    ", target, consts),
            f"{indent}else:",
            f"{indent}    raise Bad('union index out of range')",
        ]
    raise ValueError(f"no specialised Avro reader for {schema!r}")


# -- the generated writers ------------------------------------------------------------------------------------
# Every field is one inline expression on the common path, its check taken from the field's validation rule (a
# table or cache lookup when the value keeps the rule); any other value goes to the writer's fallback for that
# field. The two writers differ only in that fallback: the plain writer encodes whatever Avro can hold, the
# checked one refuses (the publisher's emit then asks validate_event). A function call per field is what made the
# first encoder cost as much as half of fastavro, hence the generated source.


class _NotFast(Exception):
    """The checked writer leaves this event to the full validation (it may be invalid, or only unusual)."""


def _not_fast(_value: object = None) -> bytes:
    raise _NotFast


def _tagged(write: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def write_tagged(value: Any) -> bytes:
        return b"\x02" + write(value)

    return write_tagged


def _enum_writer(symbols: Sequence[str]) -> Callable[[Any], bytes]:
    index = {s: _long(i) for i, s in enumerate(symbols)}

    def write_enum(value: Any) -> bytes:
        if not isinstance(value, str) or value not in index:
            raise ValueError(f"{value!r} is not one of the enum's symbols")
        return index[value]

    return write_enum


def _map_writer(value: dict[str, str]) -> bytes:
    if not value:
        return b"\x00"
    return b"".join([_long(len(value)), *[_string(k) + _string(v) for k, v in value.items()], b"\x00"])


#: The general writer of each Avro type the usage schema uses: the plain writer's fallback for unusual values.
_GENERAL: dict[str, Callable[[Any], bytes]] = {
    "long": _long,
    "int": _int,
    "string": _string,
    "boolean": _boolean,
    "map": _map_writer,
}


def _cached_text(
    cache: dict[Any, bytes], limit: int, rule: FieldRule, fallback: Callable[[Any], bytes]
) -> Callable[[Any], bytes]:
    """A cache miss of a text field: encode and keep a value that keeps ``rule``; hand any other to ``fallback``."""
    accepts, tag = acceptance(rule), b"\x02" if rule.optional else b""

    def miss(value: Any) -> bytes:
        if not accepts(value):
            return fallback(value)
        encoded = tag + _string(value)
        if len(cache) >= limit:
            cache.clear()  # bounded memory; the hot values come straight back
        cache[value] = encoded
        return encoded

    return miss


def _labels(
    cache: dict[Any, bytes], limit: int, rule: FieldRule, fallback: Callable[[Any], bytes]
) -> Callable[[Any], bytes]:
    """The attribute map: keys and values from ``cache`` when the map keeps ``rule``; any other to ``fallback``."""
    accepts = acceptance(rule)

    def write_labels(value: Any) -> bytes:
        if not accepts(value):
            return fallback(value)
        parts = [_long(len(value))]
        for text in (t for pair in value.items() for t in pair):
            encoded = cache.get(text)
            if encoded is None:
                if len(cache) >= limit:
                    cache.clear()
                encoded = cache[text] = _string(text)
            parts.append(encoded)
        parts.append(b"\x00")
        return b"".join(parts)

    return write_labels


#: The two writers generated from the same field expressions: each one's name prefix for its own helpers.
_WRITERS = ("plain", "checked")


class _Slot:
    """One field of the schema as the writer generator sees it: its rule, Avro type, and generated helpers.

    ``@`` in an expression stands for the writer's prefix (``plain_``, ``checked_``): the helpers that differ
    between the two writers are registered once per writer under that prefix.
    """

    def __init__(self, field: dict[str, Any], rule: FieldRule, slot: int, consts: dict[str, Any]) -> None:
        schema = field["type"]
        self.name, self.rule, self.slot, self.consts = field["name"], rule, slot, consts
        self.optional = isinstance(schema, list) and len(schema) == 2 and schema[0] == "null"
        self.inner = schema[1] if self.optional else schema
        self.kind = str(self.inner.get("type") if isinstance(self.inner, dict) else self.inner)
        if isinstance(schema, list) and not self.optional:
            raise ValueError(f"no specialised Avro writer for {schema!r}")
        if isinstance(self.inner, dict) and "logicalType" in self.inner:
            raise ValueError(f"logical type {self.inner['logicalType']} must be stripped first")
        if self.optional != rule.optional:
            raise ValueError(f"{self.name}: the rule and the schema disagree on null")
        self.v = f"v{slot}"
        #: the expression reading the field into ``v`` (a union's tag reads it first; then ``v`` holds it)
        self.value = self.v if self.optional else f"({self.v} := ev.{self.name})"

    def const(self, prefix: str, value: Any) -> str:
        key = f"{prefix}_{self.slot}"
        self.consts[key] = value
        return key

    def per_writer(self, prefix: str, make: Callable[[Callable[[Any], bytes]], Any]) -> str:
        """Register ``make(fallback)`` for each writer; return the ``@``-prefixed name the expressions use."""
        general = _enum_writer(self.inner["symbols"]) if self.kind == "enum" else _GENERAL[self.kind]
        plain = _tagged(general) if self.optional else general
        for writer, fallback in zip(_WRITERS, (plain, _not_fast), strict=True):
            self.consts[f"{writer}_{prefix}_{self.slot}"] = make(fallback)
        return f"@{prefix}_{self.slot}"

    def slow(self) -> str:
        return self.per_writer("slow", lambda fallback: fallback)

    def tag(self, expr: str) -> str:
        """``expr`` behind the union's branch tag: NULL when the value is None."""
        return f"(NULL if ({self.v} := ev.{self.name}) is None else {expr})" if self.optional else f"({expr})"


def _count_expr(f: _Slot, cache_max: int) -> str:
    # Small values from a table; larger ones within the rule as their first byte (from a table) and the varint
    # of the rest, cached: timestamps share it for 64 ms, large counts often repeat.
    rule, v = f.rule, f.v
    if not 0 <= rule.low < _SMALL_MAX <= rule.high <= (2**63 - 1 if f.kind == "long" else 2**31 - 1):
        raise ValueError(f"{f.name}: no inline check for the range {rule.low}..{rule.high}")
    high_cache: dict[Any, bytes] = {}
    highs = f.const("highs", high_cache)
    high = f.const("high", _miss(high_cache, cache_max, _varint_bytes))
    small, first = ("SMALL_TAGGED", "FIRST_TAGGED") if f.optional else ("SMALL", "FIRST")
    return f.tag(
        f"{small}[{v}] if type({f.value}) is int and {rule.low} <= {v} < SMALL_MAX "
        f"else {first}[{v} & 63] + ({highs}.get(h := {v} >> 6) or {high}(h)) "
        f"if type({v}) is int and SMALL_MAX <= {v} <= {rule.high} else {f.slow()}({v})"
    )


def _text_expr(f: _Slot, cache_max: int, uncached: frozenset[str]) -> str:
    rule, v = f.rule, f.v
    if rule.max_len >= _SMALL_MAX:
        raise ValueError(f"{f.name}: no inline check for strings of {rule.max_len} characters")
    if f.name not in uncached:
        cache: dict[Any, bytes] = {}
        lookup = f.const("cache", cache)
        miss = f.per_writer("miss", lambda fallback: _cached_text(cache, cache_max, rule, fallback))
        return f.tag(f"{lookup}.get({f.value}) or {miss}({v})")
    if rule.charset != "any":
        raise ValueError(f"{f.name}: no inline check for the {rule.charset} charset on an uncached field")
    low = 1 if rule.non_empty else 0
    check = f"type({f.value}) is str and {low} <= (n := len({v})) <= {rule.max_len} and {v}.isascii()"
    small = "SMALL_TAGGED" if f.optional else "SMALL"
    return f.tag(f"{small}[n] + {v}.encode() if {check} else {f.slow()}({v})")


def _field_expr(f: _Slot, cache_max: int, uncached: frozenset[str]) -> str:
    """The expression encoding field ``f`` of ``ev``, its common path checked against the field's rule."""
    rule, kind, v = f.rule, f.kind, f.v
    if rule.kind == "count" and kind in ("long", "int"):
        return _count_expr(f, cache_max)
    if rule.kind == "text" and kind == "string":
        return _text_expr(f, cache_max, uncached)
    if rule.kind == "uuid" and kind == "string" and not f.optional:
        return f"(SMALL[36] + {v}.encode() if type({f.value}) is str and MATCH_UUID({v}) else {f.slow()}({v}))"
    if rule.kind == "choice" and kind == "enum":
        tag = b"\x02" if f.optional else b""
        symbols = {s: tag + _long(i) for i, s in enumerate(f.inner["symbols"]) if s in rule.choices}
        return f.tag(f"{f.const('choice', symbols)}.get({f.value}) or {f.slow()}({v})")
    if rule.kind == "flag" and kind == "boolean":
        true, false = ("TRUE_TAGGED", "FALSE_TAGGED") if f.optional else ("b'\\x01'", "b'\\x00'")
        return f.tag(f"{true} if {f.value} is True else {false} if {v} is False else {f.slow()}({v})")
    if rule.kind == "labels" and kind == "map" and not f.optional and f.inner["values"] == "string":
        cache: dict[Any, bytes] = {}
        labels = f.per_writer("labels", lambda fallback: _labels(cache, 4 * cache_max, rule, fallback))
        return f"(b'\\x00' if type({f.value}) is dict and not {v} else {labels}({v}))"
    raise ValueError(f"{f.name}: no specialised Avro writer for rule {rule.kind} on {f.inner!r}")


def _miss(cache: dict[Any, bytes], limit: int, encode: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """The slow path of a cached value: encode ``value``, keep it (``cache`` bounded to ``limit``)."""

    def miss(value: Any) -> bytes:
        encoded = encode(value)
        if len(cache) >= limit:
            cache.clear()  # bounded memory; the hot values come straight back
        cache[value] = encoded
        return encoded

    return miss


class Generated(NamedTuple):
    """The functions generated from the usage schema and its validation rules."""

    #: ``read_event(buf, pos)``: the UsageEvent at ``pos`` and the position after it
    read_event: Callable[[bytes, int], tuple[UsageEvent, int]]
    #: ``write_events(events, parts)``: append each event's encoding to ``parts``; raises on what Avro cannot hold
    write_events: Callable[[Sequence[UsageEvent], list[bytes]], None]
    #: ``write_checked(ev)``: the encoding of an event whose every field keeps its rule, else None
    write_checked: Callable[[UsageEvent], bytes | None]


def generate(
    fields: list[dict[str, Any]], rules: Mapping[str, FieldRule], *, cache_max: int, uncached: frozenset[str]
) -> Generated:
    """The one generator: the reader and both writers of the (plain) event schema, as one generated module.

    ``rules`` must name the schema's fields in order (:data:`validation.RULES`). The caches of values that keep
    their rule are shared by both writers; each cache holds at most ``cache_max`` values (the labels' 4 ×).
    """
    if [f["name"] for f in fields] != list(rules):
        raise ValueError("the validation rules do not cover the schema's fields in order")
    consts: dict[str, Any] = {}
    read = [line for i, f in enumerate(fields) for line in _field_lines(f["type"], "    ", f"v{i}", consts)]
    elements = [_field_expr(_Slot(f, rules[f["name"]], i, consts), cache_max, uncached) for i, f in enumerate(fields)]
    lines = [
        "def read_event(buf, pos):",
        "    limit = len(buf)",
        *read,
        f"    return Event({', '.join(f'v{i}' for i in range(len(fields)))}), pos",
        "def write_events(events, parts):",
        "    extend = parts.extend",
        "    for ev in events:",
        "        extend((",
        *[f"            {e.replace('@', 'plain_')}," for e in elements],
        "        ))",
        "def write_checked(ev):",
        "    try:",
        "        return b''.join((",
        *[f"            {e.replace('@', 'checked_')}," for e in elements],
        "        ))",
        "    except HAND_ON:",  # broken rules, unusual values, not an event at all: validate_event decides
        "        return None",
    ]
    namespace: dict[str, Any] = {
        "Event": UsageEvent,
        "Bad": AvroDecodeError,
        "read_long": _read_long,
        "SMALL": _SMALL,
        "SMALL_TAGGED": _SMALL_TAGGED,
        "SMALL_MAX": _SMALL_MAX,
        "FIRST": _FIRST,
        "FIRST_TAGGED": _FIRST_TAGGED,
        "NULL": b"\x00",
        "TRUE_TAGGED": b"\x02\x01",
        "FALSE_TAGGED": b"\x02\x00",
        "MATCH_UUID": EVENT_ID_PATTERN,
        "HAND_ON": (_NotFast, AttributeError, TypeError, ValueError),
        **consts,
    }
    exec(compile("\n".join(lines), "<costplane usage_event codec>", "exec"), namespace)  # noqa: S102 - from our schema
    return Generated(namespace["read_event"], namespace["write_events"], namespace["write_checked"])
