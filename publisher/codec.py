"""The one codec: UsageBatch / UsageEvent messages to and from bytes, for publisher, worker and tools alike.

Two framings, told apart per message, so every consumer reads what every producer writes:

* **schemaless** (default): the Avro body alone, with Kafka headers ``costplane-schema`` (``UsageBatch`` or
  ``UsageEvent``) and ``costplane-schema-version``. A producer in another language (or kcat) that writes a bare
  UsageEvent with those headers is read the same way.
* **registry**: Confluent framing — magic byte 0, 4-byte schema id, Avro body — through
  ``confluent_kafka.schema_registry`` with the record-name subject strategy (the usage topic carries two record
  types). The reader looks the writer schema up by id (cached) and resolves it against the current reader schema.

Our own schema is encoded and decoded by :mod:`costplane.publisher.codec_avro` (specialised to the usage schema,
byte-identical to fastavro, two to three times cheaper); other writer schemas go through fastavro's resolution.

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

from costplane.publisher.codec_avro import SpecialisedCodec
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
#: schema name, batch tenant (None for a bare event), items, whether the items are UsageEvents already
_Read = tuple[str, str | None, list[Any], bool]


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


def _to_event(record: dict[str, Any]) -> UsageEvent:
    """An event from a record fastavro resolved from another writer schema (fields in the writer's order)."""
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
    BATCH: BATCH,
    EVENT: EVENT,
    f"{NAMESPACE}.{BATCH}": BATCH,
    f"{NAMESPACE}.{EVENT}": EVENT,
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
        self._frames: dict[str, bytes] = {}
        self._writer_by_id: dict[int, tuple[str, Any | None]] = {}
        self._readers = {BATCH: self._schemas.batch_fast, EVENT: self._schemas.event_fast}
        self._fast = SpecialisedCodec(_plain(self._schemas.event_wire))

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
        body = self._fast.encode_batch(tenant, events)
        return self._frame(BATCH) + body, self._headers(BATCH)

    def encode_valid_event(self, event: UsageEvent) -> bytes | None:
        """The Avro body of ``event`` if it passes validation on the fast path, checked while encoding.

        None leaves the event to :func:`validate_event` (it breaks a rule, or holds an unusual value the fast path
        does not decide, such as non-ASCII text) and then to :meth:`encode_event_body`. The publisher's emit uses
        this so that each field is read and checked once; the bytes equal those of :meth:`encode_event_body`.
        """
        return self._fast.encode_valid_event(event)

    def valid_event_encoder(self) -> Callable[[UsageEvent], bytes | None]:
        """:meth:`encode_valid_event` as the bare generated function, for a caller on the hot path (one call less
        per event than through the method)."""
        return self._fast.encode_valid_event

    def encode_event_body(self, event: UsageEvent) -> bytes:
        """The Avro body of one event alone, without framing: a part for :meth:`encode_batch_bodies`."""
        return self._fast.encode_event(event)

    def encode_batch_bodies(self, tenant: str, bodies: Sequence[bytes]) -> tuple[bytes, Headers]:
        """As :meth:`encode_batch`, from events already encoded one by one (the same bytes)."""
        return self._frame(BATCH) + self._fast.batch_from_bodies(tenant, bodies), self._headers(BATCH)

    def encode_event(self, event: UsageEvent) -> tuple[bytes, Headers]:
        """A bare single-event message, as producers in other languages write it."""
        return self._frame(EVENT) + self._fast.encode_event(event), self._headers(EVENT)

    def _frame(self, name: str) -> bytes:
        if self._registry is None:
            return b""
        # Registry mode: magic byte and schema id, and no costplane headers: the id is the single source of truth,
        # exactly what Confluent deserializers in any language expect.
        frame = self._frames.get(name)
        if frame is None:
            frame = self._frames[name] = b"\x00" + struct.pack(">I", self._schema_id(name))
        return frame

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

        ``now_ms``/``max_clock_skew_ms`` enable the clock-skew rule (events more than ``max_clock_skew_ms`` after
        ``now_ms`` are rejected; readers pass the record's own timestamp); ``validate`` replaces the default
        :func:`validate_event` call (e.g. with other bounds) and must raise :class:`InvalidEvent`.
        """
        result = DecodedMessage()
        if not value:
            result.rejects.append(Reject("undecodable", "empty message value"))
            return result
        try:
            name, tenant, items, built = self._read(value, headers)
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
        if name == BATCH and not items:
            result.rejects.append(Reject("empty_batch", "a UsageBatch must hold at least one event"))
        events, rejects = result.events, result.rejects
        for index, item in enumerate(items):
            try:
                event = item if built else _to_event(item)
            except TypeError as exc:
                rejects.append(Reject("schema_mismatch", str(exc)[:500], None, index))
                continue
            if tenant is not None and event.tenant != tenant:
                rejects.append(
                    Reject(
                        "tenant_mismatch",
                        f"event tenant {event.tenant!r} in a batch of tenant {tenant!r}"[:500],
                        _json_or_none(event),
                        index,
                    )
                )
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

    def _read(self, value: bytes, headers: Headers | Mapping[str, bytes] | None) -> _Read:
        """Schema name, batch tenant (None for a bare event), the items, and whether they are UsageEvents already.

        Our own schema is read by the specialised decoder straight into UsageEvents; another writer schema
        (registry mode) goes through fastavro's schema resolution and comes back as dicts.
        """
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
            raise _Rejected(
                "unknown_schema", f"{name} version {version.decode(errors='replace')} is not known to this reader"
            )
        return self._read_own(name, bytes(value))

    def _read_own(self, name: str, body: bytes) -> _Read:
        if name == BATCH:
            tenant, events = self._fast.decode_batch(body)
            return name, tenant, events, True
        return name, None, [self._fast.decode_event(body)], True

    def _read_registry(self, value: bytes) -> _Read:
        (schema_id,) = struct.unpack(">I", value[1:5])
        writer = self._writer_by_id.get(schema_id)
        if writer is None:
            writer = self._writer_by_id[schema_id] = self._fetch_writer(schema_id)
        name, writer_schema = writer
        if writer_schema is None:
            return self._read_own(name, bytes(value[5:]))
        buf = io.BytesIO(value[5:])
        record = cast(dict[str, Any], fastavro.schemaless_reader(buf, writer_schema, self._readers[name]))
        if buf.tell() != len(value) - 5:
            raise ValueError(f"{len(value) - 5 - buf.tell()} trailing bytes after the {name} record")
        if name == BATCH:
            return name, record.get("tenant"), list(record.get("events") or []), False
        return name, None, [record], False

    def _fetch_writer(self, schema_id: int) -> tuple[str, Any | None]:
        """Look a writer schema up by id (once per id and process) and parse it with plain-long timestamps.

        Returns the name (UsageBatch or UsageEvent) and the parsed writer schema, or None for the writer schema
        when it is exactly ours, so that no schema resolution is needed.
        """
        if self._registry is None:
            raise _Rejected(
                "unknown_schema",
                f"registry-framed message (schema id {schema_id}) but no registry "
                "is configured (set the schema registry URL)",
            )
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
