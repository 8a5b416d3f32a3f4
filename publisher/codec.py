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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, cast

import fastavro

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


def _plain_timestamps(schema: dict[str, Any]) -> dict[str, Any]:
    plain = copy.deepcopy(schema)
    for f in plain["fields"]:
        if f["name"] == "occurred_at":
            f["type"] = "long"
    return plain


@cache
def _schemas() -> _Schemas:
    event_wire = json.loads(schema_text("usage_event"))
    batch_wire = json.loads(schema_text("usage_batch"))
    named: dict[str, Any] = {}
    event_fast = fastavro.parse_schema(_plain_timestamps(event_wire), named_schemas=named)
    batch_fast = fastavro.parse_schema(batch_wire, named_schemas=named)
    return _Schemas(event_wire, batch_wire, event_fast, batch_fast)


def _to_record(ev: UsageEvent) -> dict[str, Any]:
    return {name: getattr(ev, name) for name in FIELD_NAMES}


def _to_event(record: dict[str, Any]) -> UsageEvent:
    if record.get("attributes") is None:
        record["attributes"] = {}
    return UsageEvent(**record)


def _header(headers: Headers | None, key: str) -> bytes | None:
    for k, v in headers or ():
        if k == key:
            return v
    return None


class UsageCodec:
    """Encode and decode usage messages; build with :meth:`schemaless` or :meth:`with_registry`."""

    def __init__(self, registry: Any | None = None, registry_conf: dict[str, Any] | None = None) -> None:
        self._schemas = _schemas()
        self._registry = registry
        self._registry_ids: dict[str, int] = {}
        self._writer_by_id: dict[int, tuple[str, Any]] = {}
        self._registry_conf = registry_conf or {}

    @classmethod
    def schemaless(cls) -> UsageCodec:
        return cls()

    @classmethod
    def with_registry(cls, url: str, conf: dict[str, Any] | None = None) -> UsageCodec:
        """Confluent Schema Registry framing; ``mock://…`` URLs give confluent-kafka's in-memory registry."""
        from confluent_kafka.schema_registry import SchemaRegistryClient

        return cls(SchemaRegistryClient.new_client({"url": url, **(conf or {})}))

    @property
    def registry(self) -> Any | None:
        return self._registry

    # -- encoding --------------------------------------------------------------------------------------------
    def encode_batch(self, tenant: str, events: Sequence[UsageEvent]) -> tuple[bytes, Headers]:
        """One Kafka message value holding 1..N events of ``tenant`` (the caller keys it by tenant)."""
        record = {"tenant": tenant, "events": [_to_record(e) for e in events]}
        return self._encode(BATCH, self._schemas.batch_fast, record)

    def encode_event(self, event: UsageEvent) -> tuple[bytes, Headers]:
        """A bare single-event message, as producers in other languages write it."""
        return self._encode(EVENT, self._schemas.event_fast, _to_record(event))

    def _encode(self, name: str, schema: Any, record: dict[str, Any]) -> tuple[bytes, Headers]:
        out = io.BytesIO()
        headers: Headers = [(SCHEMA_HEADER, name.encode()), (VERSION_HEADER, SCHEMA_VERSION)]
        if self._registry is not None:
            out.write(b"\x00" + struct.pack(">I", self._schema_id(name)))
            headers = []
        fastavro.schemaless_writer(out, schema, record)
        return out.getvalue(), headers

    def _schema_id(self, name: str) -> int:
        cached = self._registry_ids.get(name)
        if cached is not None:
            return cached
        from confluent_kafka.schema_registry import Schema

        assert self._registry is not None
        if name == BATCH:
            event_schema = Schema(json.dumps(self._schemas.event_wire), "AVRO")
            self.register(f"{NAMESPACE}.{EVENT}", event_schema)
            text = json.dumps(self._schemas.batch_wire)
            # The batch references UsageEvent by name; embed it so the registered schema is self-contained.
            text = _inline_event(self._schemas.batch_wire, self._schemas.event_wire)
            schema_id = self.register(f"{NAMESPACE}.{BATCH}", Schema(text, "AVRO"))
        else:
            schema_id = self.register(f"{NAMESPACE}.{EVENT}", Schema(json.dumps(self._schemas.event_wire), "AVRO"))
        self._registry_ids[name] = schema_id
        return schema_id

    def register(self, subject: str, schema: Any) -> int:
        assert self._registry is not None
        return int(self._registry.register_schema(subject, schema))

    # -- decoding --------------------------------------------------------------------------------------------
    def decode(
        self,
        value: bytes | None,
        headers: Headers | None = None,
        *,
        now_ms: int | None = None,
        max_clock_skew_ms: int | None = None,
        validate: Callable[[UsageEvent], None] | None = None,
    ) -> DecodedMessage:
        """Turn one message into valid events and rejects. Never raises."""
        result = DecodedMessage()
        if not value:
            result.rejects.append(Reject("undecodable", "empty message value"))
            return result
        try:
            name, record = self._read(value, headers)
        except _UnknownSchema as exc:
            result.rejects.append(Reject("unknown_schema", str(exc)))
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
        check = validate or (lambda ev: validate_event(ev, now_ms=now_ms, max_clock_skew_ms=max_clock_skew_ms))
        for index, item in enumerate(items):
            try:
                event = _to_event(item)
            except TypeError as exc:
                result.rejects.append(Reject("schema_mismatch", str(exc), None, index))
                continue
            if tenant is not None and event.tenant != tenant:
                result.rejects.append(Reject("tenant_mismatch", f"event tenant {event.tenant!r} in a batch of "
                                             f"tenant {tenant!r}", event_to_json_dict(event), index))
                continue
            try:
                check(event)
            except InvalidEvent as exc:
                result.rejects.append(Reject(exc.reason, exc.message, event_to_json_dict(event), index))
                continue
            result.events.append(event)
        return result

    def _read(self, value: bytes, headers: Headers | None) -> tuple[str, dict[str, Any]]:
        declared = _header(headers, SCHEMA_HEADER)
        if declared is None and value[:1] == b"\x00" and len(value) > 5:
            return self._read_registry(value)
        if declared is None:
            raise _UnknownSchema("no costplane-schema header and no schema registry framing")
        name = declared.decode(errors="replace")
        version = _header(headers, VERSION_HEADER) or SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            raise _UnknownSchema(f"{name} version {version.decode(errors='replace')} is not known to this worker")
        schema = {BATCH: self._schemas.batch_fast, EVENT: self._schemas.event_fast}.get(name)
        if schema is None:
            raise _UnknownSchema(f"schema {name!r} is not a usage schema")
        buf = io.BytesIO(value)
        record = cast(dict[str, Any], fastavro.schemaless_reader(buf, schema, None))
        if buf.tell() != len(value):
            raise ValueError(f"{len(value) - buf.tell()} trailing bytes after the {name} record")
        return name, record

    def _read_registry(self, value: bytes) -> tuple[str, dict[str, Any]]:
        (schema_id,) = struct.unpack(">I", value[1:5])
        writer = self._writer_by_id.get(schema_id)
        if writer is None:
            if self._registry is None:
                raise _UnknownSchema(f"registry-framed message (schema id {schema_id}) but no registry configured")
            registered = self._registry.get_schema(schema_id)
            parsed = json.loads(registered.schema_str)
            name = str(parsed.get("name", "")).rsplit(".", 1)[-1]
            if name not in (BATCH, EVENT):
                raise _UnknownSchema(f"schema id {schema_id} is {name!r}, not a usage schema")
            if name == EVENT:
                writer_schema = fastavro.parse_schema(_plain_timestamps(parsed))
            else:
                writer_schema = fastavro.parse_schema(_plain_batch(parsed))
            writer = (name, writer_schema)
            self._writer_by_id[schema_id] = writer
        name, writer_schema = writer
        reader = self._schemas.batch_fast if name == BATCH else self._schemas.event_fast
        buf = io.BytesIO(value[5:])
        return name, cast(dict[str, Any], fastavro.schemaless_reader(buf, writer_schema, reader))


class _UnknownSchema(Exception):
    """The message names a schema (or version) this codec does not read."""


def _inline_event(batch: dict[str, Any], event: dict[str, Any]) -> str:
    inlined = copy.deepcopy(batch)
    for f in inlined["fields"]:
        if f["name"] == "events":
            f["type"] = {"type": "array", "items": event}
    return json.dumps(inlined)


def _plain_batch(batch: dict[str, Any]) -> dict[str, Any]:
    plain = copy.deepcopy(batch)
    for f in plain["fields"]:
        if f["name"] == "events" and isinstance(f["type"].get("items"), dict):
            f["type"]["items"] = _plain_timestamps(f["type"]["items"])
    return plain
