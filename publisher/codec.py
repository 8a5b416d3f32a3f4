"""The one codec: UsageBatch / UsageEvent messages to and from bytes, for publisher, worker and tools alike.

Two framings, told apart per message, so every consumer reads what every producer writes:

* **schemaless** (default): the Avro body alone, with Kafka headers ``costplane-schema`` (``UsageBatch`` or
  ``UsageEvent``) and ``costplane-schema-version``. A producer in another language (or kcat) that writes a bare
  UsageEvent with those headers is read the same way.
* **registry**: Confluent framing — magic byte 0, 4-byte schema id, Avro body — through
  ``confluent_kafka.schema_registry`` with the record-name subject strategy (the usage topic carries two record
  types). The reader looks the writer schema up by id (cached) and resolves it against the current reader schema.

``decode`` never raises: undecodable bytes, unknown schemas and invalid events come back as :class:`Reject`
records with a stable reason code, and the valid events of a batch still come through.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, cast

import fastavro
from fastavro.read import SchemaResolutionError

from costplane.publisher.event import UsageEvent
from costplane.publisher.jsonio import FIELD_NAMES, event_to_json_dict
from costplane.publisher.validation import InvalidEvent, validate_event

SCHEMA_HEADER = "costplane-schema"
VERSION_HEADER = "costplane-schema-version"
SCHEMA_VERSION = b"1"
BATCH = "UsageBatch"
EVENT = "UsageEvent"
NAMESPACE = "dev.costplane.v1"

Headers = list[tuple[str, bytes]]


@dataclass(slots=True, frozen=True)
class Reject:
    """Why a message or one event of it cannot be counted (the payload of a dead-letter record)."""

    reason: str
    message: str
    event: dict[str, Any] | None = None
    index: int | None = None  # position inside the batch, when the message decoded


@dataclass(slots=True)
class DecodedMessage:
    """The valid events of one Kafka message and the rejects it produced."""

    events: list[UsageEvent] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    schema: str | None = None


def schema_text(name: str) -> str:
    """The shipped Avro schema ``name`` (``usage_event``, ``usage_batch``) as JSON text."""
    return resources.files("costplane.schemas").joinpath(f"{name}.avsc").read_text()


@dataclass(frozen=True, slots=True)
class _Schemas:
    """Parsed schemas. The *wire* schemas keep ``timestamp-millis``; the *fast* ones read it as a plain long.

    The binary encoding of a timestamp-millis is a long, so encoding and decoding with the fast schemas produce
    identical bytes while skipping a datetime per event: ``occurred_at`` is epoch millis end to end.
    """

    event_wire: dict[str, Any]
    batch_wire: dict[str, Any]
    event_fast: Any
    batch_fast: Any


_FIELD_COUNT = len(FIELD_NAMES)


@cache
def _schemas() -> _Schemas:
    event_wire = json.loads(schema_text("usage_event"))
    order = tuple(f["name"] for f in event_wire["fields"])
    if order != FIELD_NAMES:  # positional construction in _to_event depends on it
        raise RuntimeError(f"usage_event.avsc field order {order} differs from UsageEvent {FIELD_NAMES}")
    batch_wire = json.loads(schema_text("usage_batch"))
    named: dict[str, Any] = {}
    event_fast = fastavro.parse_schema(_plain(event_wire), named_schemas=named)
    batch_fast = fastavro.parse_schema(batch_wire, named_schemas=named)
    return _Schemas(event_wire, batch_wire, event_fast, batch_fast)


def _to_record(ev: UsageEvent) -> dict[str, Any]:
    return {name: getattr(ev, name) for name in FIELD_NAMES}


def _to_event(record: dict[str, Any], ordered: bool) -> UsageEvent:
    """Build the event from a decoded record.

    Read without schema resolution, fastavro returns records as dicts in schema field order, which is the
    dataclass's field order (checked once in :func:`_schemas`), so the values go in positionally: about six times
    cheaper than ``**record`` for 30 fields, the largest single cost of decoding after fastavro itself. Records
    resolved from another writer schema come in the writer's order and go in by name.
    """
    if ordered:
        return UsageEvent(*record.values())
    return UsageEvent(**record)


def _header(headers: Headers | Mapping[str, bytes] | None, key: str) -> bytes | None:
    """A header's value as bytes; list-of-pairs (Kafka clients) or a mapping (some frameworks), str or bytes."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for k, v in pairs:
        if k == key or (isinstance(k, bytes) and k.decode(errors="replace") == key):
            return v.encode() if isinstance(v, str) else v
    return None


#: Header values naming the usage schemas: the short name, or the full name other-language producers may use.
_SCHEMA_NAMES = {
    BATCH: BATCH, EVENT: EVENT, f"{NAMESPACE}.{BATCH}": BATCH, f"{NAMESPACE}.{EVENT}": EVENT,
}


class UsageCodec:
    """Encode and decode usage messages; build with :meth:`schemaless` or :meth:`with_registry`.

    One instance per process (or per producer/consumer) is enough: it parses the schemas once and caches schema
    ids and writer schemas fetched from the registry. Not shared across threads while registering (the first
    ``encode_*`` in registry mode registers the schemas; later calls only read the cache).
    """

    def __init__(self, registry: Any | None = None) -> None:
        self._schemas = _schemas()
        self._registry = registry
        self._registry_ids: dict[str, int] = {}
        self._writer_by_id: dict[int, tuple[str, Any | None]] = {}
        self._readers = {BATCH: self._schemas.batch_fast, EVENT: self._schemas.event_fast}
        self._encoder = _Encoder(_plain(self._schemas.event_wire))

    @classmethod
    def schemaless(cls) -> UsageCodec:
        """Avro body plus ``costplane-schema`` headers; no registry needed anywhere."""
        return cls()

    @classmethod
    def with_registry(cls, url: str, conf: dict[str, Any] | None = None) -> UsageCodec:
        """Confluent Schema Registry framing; ``mock://…`` URLs give confluent-kafka's in-memory registry.

        ``conf`` adds SchemaRegistryClient settings (``basic.auth.user.info``, ``ssl.ca.location`` …).
        """
        from confluent_kafka.schema_registry import SchemaRegistryClient

        return cls(SchemaRegistryClient.new_client({"url": url, **(conf or {})}))

    @property
    def registry(self) -> Any | None:
        """The SchemaRegistryClient in registry mode, else None."""
        return self._registry

    # -- encoding --------------------------------------------------------------------------------------------
    def encode_batch(self, tenant: str, events: Sequence[UsageEvent]) -> tuple[bytes, Headers]:
        """One Kafka message value holding 1..N events of ``tenant`` (the caller keys it by tenant).

        The events are expected to be validated already (the publisher validates on emit): encoding checks only
        what Avro itself enforces and raises ``ValueError``/``TypeError`` on a value the schema cannot hold.
        """
        body = self._encoder.batch(tenant, events)
        return self._frame(BATCH) + body, self._headers(BATCH)

    def encode_event(self, event: UsageEvent) -> tuple[bytes, Headers]:
        """A bare single-event message, as producers in other languages write it."""
        return self._frame(EVENT) + self._encoder.event(event), self._headers(EVENT)

    def _frame(self, name: str) -> bytes:
        if self._registry is None:
            return b""
        # Registry mode: magic byte and schema id, and no costplane headers: the id is the single source of truth,
        # exactly what Confluent deserializers in any language expect.
        return b"\x00" + struct.pack(">I", self._schema_id(name))

    def _headers(self, name: str) -> Headers:
        if self._registry is None:
            return [(SCHEMA_HEADER, name.encode()), (VERSION_HEADER, SCHEMA_VERSION)]
        return []

    def _schema_id(self, name: str) -> int:
        cached = self._registry_ids.get(name)
        if cached is not None:
            return cached
        from confluent_kafka.schema_registry import Schema

        if name == BATCH:
            # The batch references UsageEvent by name; the registered schema has it inlined, so it is
            # self-contained and readable by every Confluent client without schema references.
            text = _inline_event(self._schemas.batch_wire, self._schemas.event_wire)
        else:
            text = json.dumps(self._schemas.event_wire)
        schema_id = self.register(f"{NAMESPACE}.{name}", Schema(text, "AVRO"))
        self._registry_ids[name] = schema_id
        return schema_id

    def register(self, subject: str, schema: Any) -> int:
        """Register ``schema`` under ``subject`` (record-name strategy) and return its id."""
        if self._registry is None:
            raise RuntimeError("this codec has no schema registry")
        return int(self._registry.register_schema(subject, schema))

    # -- decoding --------------------------------------------------------------------------------------------
    def decode(
        self,
        value: bytes | None,
        headers: Headers | Mapping[str, bytes] | None = None,
        *,
        now_ms: int | None = None,
        max_clock_skew_ms: int | None = None,
        validate: Callable[[UsageEvent], None] | None = None,
    ) -> DecodedMessage:
        """Turn one message into valid events and rejects. Never raises.

        ``now_ms``/``max_clock_skew_ms`` enable the clock-skew rule; ``validate`` replaces the default
        :func:`validate_event` call (e.g. with other bounds) and must raise :class:`InvalidEvent`.
        """
        result = DecodedMessage()
        if not value:
            result.rejects.append(Reject("undecodable", "empty message value"))
            return result
        try:
            name, record, ordered = self._read(value, headers)
        except _Rejected as exc:
            result.rejects.append(Reject(exc.reason, str(exc)[:500]))
            return result
        except SchemaResolutionError as exc:
            result.rejects.append(Reject("schema_mismatch", f"writer schema cannot be read as ours: {exc}"[:500]))
            return result
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a dead letter, never a crash
            result.rejects.append(Reject("undecodable", f"{type(exc).__name__}: {exc}"[:500]))
            return result
        result.schema = name
        if name == BATCH:
            tenant = record.get("tenant")
            items = record.get("events") or []
            if not items:
                result.rejects.append(Reject("empty_batch", "a UsageBatch must hold at least one event"))
        else:
            tenant, items = None, [record]
        events, rejects = result.events, result.rejects
        for index, item in enumerate(items):
            try:
                event = _to_event(item, ordered)
            except TypeError as exc:
                rejects.append(Reject("schema_mismatch", str(exc)[:500], None, index))
                continue
            if tenant is not None and event.tenant != tenant:
                rejects.append(Reject("tenant_mismatch", f"event tenant {event.tenant!r} in a batch of tenant "
                                      f"{tenant!r}"[:500], _json_or_none(event), index))
                continue
            try:
                if validate is None:
                    validate_event(event, now_ms=now_ms, max_clock_skew_ms=max_clock_skew_ms)
                else:
                    validate(event)
            except InvalidEvent as exc:
                rejects.append(Reject(exc.reason, exc.message, _json_or_none(event), index))
                continue
            except Exception as exc:  # noqa: BLE001 - a crashing custom validator must not lose the message
                rejects.append(Reject("schema_mismatch", f"{type(exc).__name__}: {exc}"[:500], None, index))
                continue
            events.append(event)
        return result

    def _read(self, value: bytes, headers: Headers | Mapping[str, bytes] | None) -> tuple[str, dict[str, Any], bool]:
        """Name, record, and whether the record's fields are in our schema's order (read without resolution)."""
        declared = _header(headers, SCHEMA_HEADER)
        if declared is None:
            if value[:1] == b"\x00" and len(value) > 5:
                return self._read_registry(value)
            raise _Rejected("unknown_schema", "no costplane-schema header and no schema registry framing")
        text = declared.decode(errors="replace")
        name = _SCHEMA_NAMES.get(text)
        if name is None:
            raise _Rejected("unknown_schema", f"schema {text!r} is not a usage schema")
        version = _header(headers, VERSION_HEADER) or SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            raise _Rejected("unknown_schema",
                            f"{name} version {version.decode(errors='replace')} is not known to this reader")
        buf = io.BytesIO(value)
        record = cast(dict[str, Any], fastavro.schemaless_reader(buf, self._readers[name], None))
        if buf.tell() != len(value):
            raise ValueError(f"{len(value) - buf.tell()} trailing bytes after the {name} record")
        return name, record, True

    def _read_registry(self, value: bytes) -> tuple[str, dict[str, Any], bool]:
        (schema_id,) = struct.unpack(">I", value[1:5])
        writer = self._writer_by_id.get(schema_id)
        if writer is None:
            writer = self._writer_by_id[schema_id] = self._fetch_writer(schema_id)
        name, writer_schema = writer
        buf = io.BytesIO(value[5:])
        if writer_schema is None:
            record = cast(dict[str, Any], fastavro.schemaless_reader(buf, self._readers[name], None))
        else:
            record = cast(dict[str, Any], fastavro.schemaless_reader(buf, writer_schema, self._readers[name]))
        if buf.tell() != len(value) - 5:
            raise ValueError(f"{len(value) - 5 - buf.tell()} trailing bytes after the {name} record")
        return name, record, writer_schema is None

    def _fetch_writer(self, schema_id: int) -> tuple[str, Any | None]:
        """Look a writer schema up by id (once per id and process) and parse it with plain-long timestamps.

        Returns the name (UsageBatch or UsageEvent) and the parsed writer schema, or None for the writer schema
        when it is exactly ours, so that no schema resolution is needed.
        """
        if self._registry is None:
            raise _Rejected("unknown_schema", f"registry-framed message (schema id {schema_id}) but no registry "
                            "is configured (set the schema registry URL)")
        registry: Any = self._registry
        registered = self._registry_call(schema_id, lambda: registry.get_schema(schema_id))
        if getattr(registered, "schema_type", "AVRO") not in (None, "AVRO"):
            raise _Rejected("unknown_schema", f"schema id {schema_id} is {registered.schema_type}, not Avro")
        parsed = json.loads(registered.schema_str)
        name = str(parsed.get("name", "") if isinstance(parsed, dict) else "").rsplit(".", 1)[-1]
        if name not in (BATCH, EVENT):
            raise _Rejected("unknown_schema", f"schema id {schema_id} is {name or parsed!r}, not a usage schema")
        refs = list(getattr(registered, "references", None) or [])
        if not refs and _plain(parsed) == self._own_plain(name):
            # Our own schema (the usual case): read without schema resolution, about twice as fast.
            return name, None
        named: dict[str, Any] = {}
        self._parse_references(schema_id, refs, named, depth=0)
        return name, fastavro.parse_schema(_plain(parsed), named_schemas=named)

    def _own_plain(self, name: str) -> Any:
        if name == EVENT:
            return _plain(self._schemas.event_wire)
        return _plain(json.loads(_inline_event(self._schemas.batch_wire, self._schemas.event_wire)))

    def _parse_references(self, schema_id: int, refs: list[Any], named: dict[str, Any], *, depth: int) -> None:
        """Parse schemas a writer schema references by name (Confluent schema references) into ``named``."""
        if depth > 8:
            raise _Rejected("unknown_schema", f"schema id {schema_id}: references nest too deeply")
        registry: Any = self._registry
        for ref in refs:
            def lookup(ref: Any = ref) -> Any:
                return registry.get_version(ref.subject, ref.version)

            version = self._registry_call(schema_id, lookup)
            schema = version.schema
            self._parse_references(schema_id, list(schema.references or []), named, depth=depth + 1)
            fastavro.parse_schema(_plain(json.loads(schema.schema_str)), named_schemas=named)

    def _registry_call(self, schema_id: int, call: Callable[[], Any]) -> Any:
        """A registry lookup: 404 means an unknown schema; anything else means the registry is unavailable.

        The difference matters downstream: ``registry_unavailable`` dead letters are valid data that a
        ``dlq replay`` recovers once the registry is back, and a burst of them trips the worker's invalid-ratio stop.
        """
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return call()
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise _Rejected("unknown_schema", f"schema id {schema_id} is not in the registry") from exc
            raise _Rejected("registry_unavailable", f"schema id {schema_id}: registry error {exc}") from exc
        except Exception as exc:
            raise _Rejected("registry_unavailable", f"schema id {schema_id}: {type(exc).__name__}: {exc}") from exc


class _Encoder:
    """Avro binary encoder specialised to the UsageEvent schema, byte for byte what fastavro writes.

    fastavro's writer takes dicts and, for each of the ~20 ``["null", X]`` unions, works out which branch a value
    fits; here each field's writer is chosen once from the schema, values are read straight off the dataclass, and
    the encoded form of repeated low-cardinality strings (tenant, model, feature …) is cached per codec. About
    twice as fast as fastavro per event; ``tests/unit/test_codec_contract.py`` proves the bytes identical.
    A schema type it does not know makes construction fail loudly rather than encode something else.
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

    def event(self, ev: UsageEvent) -> bytes:
        try:
            return b"".join([write(getattr(ev, name)) for name, write in self._plan])
        except (KeyError, AttributeError, TypeError) as exc:
            raise ValueError(f"event {getattr(ev, 'event_id', '?')!r} does not fit the schema: "
                             f"{type(exc).__name__}: {exc}") from exc

    def batch(self, tenant: str, events: Sequence[UsageEvent]) -> bytes:
        parts = [self._string_cached(tenant)]
        if events:
            parts.append(_long(len(events)))
            parts.extend(self.event(ev) for ev in events)
        parts.append(b"\x00")
        return b"".join(parts)

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
            raise ValueError(f"logical type {schema['logicalType']} must be stripped before encoding")
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


_ONE_BYTE = tuple(bytes([(i << 1) if i >= 0 else 0]) for i in range(64))


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


def _json_or_none(event: UsageEvent) -> dict[str, Any] | None:
    """The event for the dead letter, or None when it is too malformed to render (decode must not raise)."""
    try:
        data: dict[str, Any] = event_to_json_dict(event)
    except (TypeError, ValueError):
        return None
    return data


class _Rejected(Exception):
    """A message-level reject with its reason code (unknown schema, registry unavailable)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _inline_event(batch: dict[str, Any], event: dict[str, Any]) -> str:
    inlined = copy.deepcopy(batch)
    for f in inlined["fields"]:
        if f["name"] == "events":
            f["type"] = {"type": "array", "items": event}
    return json.dumps(inlined)


def _plain(schema: Any) -> Any:
    """A copy of ``schema`` with every ``timestamp-millis`` annotation dropped (read and written as a long).

    Logical types are annotations on the binary type, so this changes no byte on the wire; it only spares a
    datetime per event. Works on any nesting (a writer's batch with the event inlined, unions, arrays, maps).
    """
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("logicalType") in ("timestamp-millis", "local-timestamp-millis") and schema.get("type") == "long":
        return "long"
    plain = dict(schema)
    if "fields" in plain:
        plain["fields"] = [{**f, "type": _plain(f["type"])} for f in plain["fields"]]
    for key in ("items", "values"):
        if key in plain:
            plain[key] = _plain(plain[key])
    if isinstance(plain.get("type"), (dict, list)):
        plain["type"] = _plain(plain["type"])
    return plain
