"""The usage-event contract: examples, validation reasons, both wire framings, and rejects instead of crashes."""

from __future__ import annotations

import json
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.jsonio import event_from_json_dict, event_to_json_dict
from costplane.publisher.validation import InvalidEvent, validate_event
from costplane.synthetic import generate

EXAMPLES = Path(str(resources.files("costplane.schemas"))) / "examples"
VALID = sorted((EXAMPLES / "valid").glob("*.json"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(params=["schemaless", "registry"])
def codec(request: pytest.FixtureRequest) -> UsageCodec:
    if request.param == "schemaless":
        return UsageCodec.schemaless()
    return UsageCodec.with_registry(f"mock://registry-{uuid.uuid4().hex}")


def test_there_are_enough_examples() -> None:
    assert len(VALID) >= 7 and len(INVALID) >= 8


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_examples_round_trip_through_both_framings(path: Path, codec: UsageCodec) -> None:
    event = event_from_json_dict(_load(path))
    value, headers = codec.encode_batch(event.tenant, [event])
    decoded = codec.decode(value, headers)
    assert decoded.rejects == [] and decoded.events == [event]
    value, headers = codec.encode_event(event)
    assert codec.decode(value, headers).events == [event]
    assert event_from_json_dict(event_to_json_dict(event)) == event


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_examples_are_rejected_with_the_stated_reason(path: Path) -> None:
    data = _load(path)
    why = data.pop("_why")
    with pytest.raises(InvalidEvent) as info:
        event_from_json_dict(data)
    assert info.value.reason == why["reason"]


def _wire_representable(path: Path) -> bool:
    """Invalid examples a careless producer could still put on the wire (others cannot even be encoded)."""
    data = _load(path)
    data.pop("_why")
    try:
        bad = event_from_json_dict(data, validate=False)
        UsageCodec.schemaless().encode_event(bad)
    except (InvalidEvent, TypeError, ValueError, OverflowError):
        return False
    return True


ON_THE_WIRE = [p for p in INVALID if _wire_representable(p)]


def test_most_invalid_examples_can_reach_the_wire() -> None:
    assert {p.stem for p in ON_THE_WIRE} >= {"negative_tokens", "absurd_tokens", "empty_tenant", "bad_event_id"}


@pytest.mark.parametrize("path", ON_THE_WIRE, ids=lambda p: p.stem)
def test_invalid_events_that_encode_become_rejects_in_the_decoder(path: Path, codec: UsageCodec) -> None:
    """What a careless producer can put on the wire is caught again, with the same reason, by the consumer."""
    data = _load(path)
    why = data.pop("_why")
    bad = event_from_json_dict(data, validate=False)
    value, headers = codec.encode_event(bad)
    decoded = codec.decode(value, headers)
    assert decoded.events == [] and [(r.index, r.reason) for r in decoded.rejects] == [(0, why["reason"])]
    assert decoded.rejects[0].event is not None and decoded.rejects[0].event["event_id"] == bad.event_id


def test_valid_events_of_a_batch_survive_an_invalid_neighbour(codec: UsageCodec) -> None:
    events = [e for e in generate(50, seed=2) if e.tenant == "acme"]
    events[3].input_tokens = -1
    events[7].event_id = "not-a-uuid"
    value, headers = codec.encode_batch("acme", events)
    decoded = codec.decode(value, headers)
    assert sorted((r.index, r.reason) for r in decoded.rejects) == [(3, "negative_tokens"), (7, "bad_event_id")]
    assert decoded.events == [e for i, e in enumerate(events) if i not in (3, 7)]


def test_tenant_mismatch_inside_a_batch(codec: UsageCodec) -> None:
    events = list(generate(20, seed=3))
    value, headers = codec.encode_batch("acme", events)
    decoded = codec.decode(value, headers)
    assert all(e.tenant == "acme" for e in decoded.events)
    assert {r.reason for r in decoded.rejects} <= {"tenant_mismatch"}
    assert len(decoded.events) + len(decoded.rejects) == 20


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"\x03\x99random bytes", [("costplane-schema", b"UsageBatch"), ("costplane-schema-version", b"1")],
         "undecodable"),
        (b"anything", [("costplane-schema", b"Invoice")], "unknown_schema"),
        (b"anything", [("costplane-schema", b"UsageBatch"), ("costplane-schema-version", b"9")], "unknown_schema"),
        (b"plain text, no headers", None, "unknown_schema"),
        (b"", None, "undecodable"),
        (None, None, "undecodable"),
        (b"\x00\x00\x00\x00\x07body", None, "unknown_schema"),  # registry framing, no registry configured
    ],
)
def test_bad_messages_become_rejects_never_exceptions(value: bytes | None, headers: Any, reason: str) -> None:
    decoded = UsageCodec.schemaless().decode(value, headers)
    assert decoded.events == [] and [r.reason for r in decoded.rejects] == [reason]


def test_trailing_garbage_is_undecodable() -> None:
    codec = UsageCodec.schemaless()
    event = next(generate(1))
    value, headers = codec.encode_event(event)
    assert codec.decode(value + b"\x00junk", headers).rejects[0].reason == "undecodable"


def test_clock_skew_is_checked_when_the_consumer_asks() -> None:
    codec = UsageCodec.schemaless()
    event = next(generate(1, start_ms=1_767_225_600_000))
    value, headers = codec.encode_event(event)
    assert codec.decode(value, headers, now_ms=event.occurred_at + 1000, max_clock_skew_ms=5000).events
    skewed = codec.decode(value, headers, now_ms=event.occurred_at + 3_600_000, max_clock_skew_ms=300_000)
    assert [r.reason for r in skewed.rejects] == ["clock_skew"]


def test_confluent_avro_deserializer_reads_what_the_codec_writes() -> None:
    codec = UsageCodec.with_registry("mock://confluent-interop")
    events = [e for e in generate(30, seed=4) if e.tenant == "globex"]
    value, headers = codec.encode_batch("globex", events)
    assert headers == [] and value[0] == 0  # Confluent framing: magic byte, schema id, body
    deserializer = AvroDeserializer(codec.registry)
    record = deserializer(value, SerializationContext("costplane.usage", MessageField.VALUE))
    assert record["tenant"] == "globex" and len(record["events"]) == len(events)
    first = record["events"][0]
    assert first["event_id"] == events[0].event_id and first["input_tokens"] == events[0].input_tokens
    assert int(first["occurred_at"].timestamp() * 1000) == events[0].occurred_at
    # A second codec on the same registry (another process) reads it by schema id.
    reader = UsageCodec(codec.registry)
    assert reader.decode(value, None).events == events


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tenant": "t" * 600}, "string_too_long"),
        ({"user_id": "bad \udc80 surrogate"}, "not_utf8"),
        ({"input_tokens": True}, "bad_type"),
        ({"operation": "telepathy"}, "unknown_operation"),
        ({"latency_ms": -1}, "negative_value"),
        ({"occurred_at": 0}, "bad_timestamp"),
        ({"provider": ""}, "missing_field"),
        ({"attributes": {f"k{i}": "v" for i in range(65)}}, "bad_attributes"),
    ],
)
def test_validation_reasons(change: dict[str, Any], reason: str) -> None:
    event = next(generate(1))
    for key, value in change.items():
        setattr(event, key, value)
    with pytest.raises(InvalidEvent) as info:
        validate_event(event)
    assert info.value.reason == reason


def test_synthetic_events_are_valid() -> None:
    for event in generate(500, seed=9):
        assert isinstance(event, UsageEvent)
        validate_event(event)
