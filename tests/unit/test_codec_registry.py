"""Registry framing against confluent-kafka's own serializers, on its in-memory ``mock://`` registry (no sockets).

Both directions: Confluent's ``AvroDeserializer`` reads what the publisher's codec writes, and the codec reads
what Confluent's ``AvroSerializer`` writes (a producer in any language using Confluent's client looks like that).
"""

from __future__ import annotations

import io
import json
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from costplane.publisher.codec import UsageCodec, schema_text
from costplane.publisher.event import UsageEvent
from costplane.publisher.jsonio import event_to_json_dict
from costplane.synthetic import generate

CTX = SerializationContext("costplane.usage", MessageField.VALUE)


@pytest.fixture
def codec() -> UsageCodec:
    return UsageCodec.with_registry(f"mock://registry-{uuid.uuid4().hex}")


def _events(tenant: str, n: int = 40, seed: int = 4) -> list[UsageEvent]:
    return [e for e in generate(n, seed=seed) if e.tenant == tenant]


def _as_confluent(event: UsageEvent) -> dict[str, Any]:
    """The record as a Confluent (fastavro with logical types) reader returns it: occurred_at as a datetime."""
    record: dict[str, Any] = event_to_json_dict(event)
    record["occurred_at"] = datetime.fromtimestamp(event.occurred_at / 1000, tz=UTC)
    return record


def test_confluent_deserializer_reads_a_batch(codec: UsageCodec) -> None:
    events = _events("globex")
    value, headers = codec.encode_batch("globex", events)
    assert headers == [] and value[0] == 0  # Confluent framing: magic byte, 4-byte schema id, body
    record = AvroDeserializer(codec.registry)(value, CTX)
    assert record["tenant"] == "globex"
    assert record["events"] == [_as_confluent(e) for e in events]


def test_confluent_deserializer_reads_a_bare_event(codec: UsageCodec) -> None:
    event = _events("acme")[0]
    value, _ = codec.encode_event(event)
    assert AvroDeserializer(codec.registry)(value, CTX) == _as_confluent(event)


def test_schemas_are_registered_under_record_name_subjects(codec: UsageCodec) -> None:
    event = _events("acme")[0]
    batch_id = struct.unpack(">I", codec.encode_batch("acme", [event])[0][1:5])[0]
    event_id = struct.unpack(">I", codec.encode_event(event)[0][1:5])[0]
    registry = codec.registry
    assert registry is not None and batch_id != event_id
    assert registry.get_latest_version("dev.costplane.v1.UsageBatch").schema_id == batch_id
    assert registry.get_latest_version("dev.costplane.v1.UsageEvent").schema_id == event_id


def test_a_second_process_reads_by_schema_id(codec: UsageCodec) -> None:
    """Another codec on the same registry (another process) has never seen the ids: it looks them up."""
    events = _events("acme")
    batch, _ = codec.encode_batch("acme", events)
    bare, _ = codec.encode_event(events[0])
    reader = UsageCodec(codec.registry)
    first = reader.decode(batch, None)
    assert first.schema == "UsageBatch" and first.events == events and first.rejects == []
    assert reader.decode(bare, []).events == events[:1]
    assert reader.decode(batch, None).events == events  # cached id, same answer


def test_codec_reads_what_confluents_serializer_writes(codec: UsageCodec) -> None:
    """A Confluent producer (any language) writing UsageEvent with the record-name strategy."""
    from confluent_kafka.schema_registry import record_subject_name_strategy

    serializer = AvroSerializer(
        codec.registry, schema_text("usage_event"), conf={"subject.name.strategy": record_subject_name_strategy}
    )
    event = _events("acme")[0]
    value = serializer(_as_confluent(event), CTX)
    assert value is not None
    decoded = codec.decode(value, None)
    assert decoded.rejects == [] and decoded.events == [event]


def test_an_older_writer_schema_is_resolved(codec: UsageCodec) -> None:
    """A producer on an older schema (fewer optional fields) is read through schema resolution, defaults filled."""
    registry = codec.registry
    assert registry is not None
    old = json.loads(schema_text("usage_event"))
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("billed_cost_nanos", "content_hash")]
    schema_id = registry.register_schema("dev.costplane.v1.UsageEvent", Schema(json.dumps(old), "AVRO"))
    event = _events("acme")[0]
    event.billed_cost_nanos, event.content_hash = None, None
    record = {k: v for k, v in event_to_json_dict(event).items() if k not in ("billed_cost_nanos", "content_hash")}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old), record)
    decoded = codec.decode(b"\x00" + struct.pack(">I", schema_id) + body.getvalue(), None)
    assert decoded.rejects == [] and decoded.events == [event]


def test_a_batch_schema_with_references_is_read(codec: UsageCodec) -> None:
    """Confluent clients may register UsageBatch with a schema reference to UsageEvent instead of inlining it."""
    registry = codec.registry
    assert registry is not None
    registry.register_schema("dev.costplane.v1.UsageEvent", Schema(schema_text("usage_event"), "AVRO"))
    version = registry.get_latest_version("dev.costplane.v1.UsageEvent").version
    ref = SchemaReference("dev.costplane.v1.UsageEvent", "dev.costplane.v1.UsageEvent", version)
    batch_id = registry.register_schema("refs-batch", Schema(schema_text("usage_batch"), "AVRO", [ref]))
    events = _events("initech")
    named: dict[str, Any] = {}
    fastavro.parse_schema(json.loads(schema_text("usage_event")), named_schemas=named)
    writer = fastavro.parse_schema(json.loads(schema_text("usage_batch")), named_schemas=named)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, writer, {"tenant": "initech", "events": [event_to_json_dict(e) for e in events]})
    decoded = codec.decode(b"\x00" + struct.pack(">I", batch_id) + body.getvalue(), None)
    assert decoded.rejects == [] and decoded.events == events


def test_registry_framing_failures_are_rejects(codec: UsageCodec) -> None:
    registry = codec.registry
    assert registry is not None
    other = {"type": "record", "name": "Invoice", "fields": [{"name": "n", "type": "long"}]}
    invoice_id = registry.register_schema("invoice", Schema(json.dumps(other), "AVRO"))
    incompatible = json.loads(schema_text("usage_event"))
    next(f for f in incompatible["fields"] if f["name"] == "input_tokens")["type"] = "string"
    bad_id = registry.register_schema("bad", Schema(json.dumps(incompatible), "AVRO"))
    event = _events("acme")[0]
    good, _ = codec.encode_event(event)
    cases = {
        "unknown id": (b"\x00" + struct.pack(">I", 987654) + good[5:], "unknown_schema"),
        "another record": (b"\x00" + struct.pack(">I", invoice_id) + b"\x02", "unknown_schema"),
        "incompatible writer": (b"\x00" + struct.pack(">I", bad_id) + good[5:], "schema_mismatch"),
        "truncated body": (good[:20], "undecodable"),
        "trailing bytes": (good + b"\x00", "undecodable"),
    }
    for label, (value, reason) in cases.items():
        decoded = codec.decode(value, None)
        assert (label, decoded.events, [r.reason for r in decoded.rejects]) == (label, [], [reason])


def test_an_unreachable_registry_is_not_a_bad_message() -> None:
    """A registry outage must be told apart from bad data: the dead letter says registry_unavailable."""

    class Down:
        def get_schema(self, schema_id: int) -> Any:
            raise ConnectionError("registry down")

    value, _ = UsageCodec.with_registry("mock://writer").encode_event(_events("acme")[0])
    decoded = UsageCodec(Down()).decode(value, None)
    assert [r.reason for r in decoded.rejects] == ["registry_unavailable"]


def test_mock_registry_client_is_in_memory() -> None:
    """The tests above rely on mock:// never opening a socket (tests/conftest.py would fail them if it did)."""
    client = SchemaRegistryClient.new_client({"url": "mock://in-memory"})
    assert type(client).__name__ == "MockSchemaRegistryClient"
