"""The usage-event contract: examples, validation reasons, both wire framings, and rejects instead of crashes."""

from __future__ import annotations

import json
import random
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

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
    assert set(why) == {"reason", "message"} and why["message"]
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
        (
            b"\x03\x99random bytes",
            [("costplane-schema", b"UsageBatch"), ("costplane-schema-version", b"1")],
            "undecodable",
        ),
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
    """Only the future is bounded: an event from ahead of the reference clock by more than the skew is refused."""
    codec = UsageCodec.schemaless()
    event = next(generate(1, start_ms=1_767_225_600_000))
    value, headers = codec.encode_event(event)
    assert codec.decode(value, headers, now_ms=event.occurred_at - 1000, max_clock_skew_ms=5000).events
    skewed = codec.decode(value, headers, now_ms=event.occurred_at - 3_600_000, max_clock_skew_ms=300_000)
    assert [r.reason for r in skewed.rejects] == ["clock_skew"]
    assert skewed.rejects[0].message == "occurred_at is +3600s from now, beyond the allowed skew of 300s"


def test_old_events_are_not_clock_skew() -> None:
    """Replays and backfills carry old timestamps: a week-old event is valid whatever the allowed skew."""
    codec = UsageCodec.schemaless()
    event = next(generate(1, start_ms=1_767_225_600_000))
    week_ms = 7 * 24 * 3_600_000
    value, headers = codec.encode_event(event)
    decoded = codec.decode(value, headers, now_ms=event.occurred_at + week_ms, max_clock_skew_ms=300_000)
    assert decoded.events == [event] and decoded.rejects == []
    validate_event(event, now_ms=event.occurred_at + week_ms, max_clock_skew_ms=300_000)
    just_inside = event.occurred_at - 300_000  # exactly the allowed skew ahead: still accepted
    validate_event(event, now_ms=just_inside, max_clock_skew_ms=300_000)
    with pytest.raises(InvalidEvent) as info:
        validate_event(event, now_ms=just_inside - 1, max_clock_skew_ms=300_000)
    assert info.value.reason == "clock_skew" and info.value.field == "occurred_at"


def test_decode_never_raises_on_mutated_messages(codec: UsageCodec) -> None:
    """Flipped, cut and spliced bytes of real messages: every outcome is events and/or rejects, never an exception."""
    rng = random.Random(11)
    events = [e for e in generate(40, seed=5) if e.tenant == "acme"]
    value, headers = codec.encode_batch("acme", events)
    outcomes: set[str] = set()
    for _ in range(1500):
        data = bytearray(value)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            kind = rng.random()
            if kind < 0.6:
                data[pos] = rng.randrange(256)
            elif kind < 0.8:
                del data[pos : pos + rng.randint(1, 20)]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        decoded = codec.decode(bytes(data), headers)
        assert all(isinstance(e, UsageEvent) for e in decoded.events)
        outcomes.update(r.reason for r in decoded.rejects)
    assert "undecodable" in outcomes


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
        ({"attributes": None}, "bad_attributes"),
        ({"attributes": {"": "v"}}, "bad_attributes"),
        ({"attributes": {"k": None}}, "bad_type"),
        ({"attributes": {"k": "v" * 513}}, "string_too_long"),
        ({"event_id": "019b76da-a800-76b0-8f67-05c911e20b8f\n"}, "bad_event_id"),
        ({"status": ["ok"]}, "unknown_status"),
        ({"service_tier": {"batch": 1}}, "unknown_service_tier"),
        ({"attempt": 2**31}, "bad_attempt"),
        ({"turn": 2**31}, "out_of_range"),
        ({"billed_cost_nanos": 2**63}, "out_of_range"),
        ({"max_tokens": 10_000_001}, "absurd_tokens"),
        ({"occurred_at": 253_402_300_800_000}, "bad_timestamp"),
        ({"tokens_estimated": 1}, "bad_type"),
        ({"model": "gpt-4o\udcff"}, "not_utf8"),
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


def test_decoding_batches_yields_every_event_in_order() -> None:
    """Decode and validate many batches; what that costs beside a bare fastavro read is a row of
    ``bench.bench_hotpaths``."""
    codec = UsageCodec.schemaless()
    events = [e for e in generate(1800, seed=8) if e.tenant == "acme"]
    messages = [codec.encode_batch("acme", events[i : i + 50]) for i in range(0, len(events), 50)]
    decoded = [codec.decode(v, h) for v, h in messages]
    assert [e for d in decoded for e in d.events] == events
    assert all(d.rejects == [] and d.schema == "UsageBatch" for d in decoded)


@pytest.mark.parametrize(
    "shape",
    [
        lambda h: h,
        lambda h: dict(h),
        lambda h: [(k, v.decode()) for k, v in h],
        lambda h: [(k.encode(), v) for k, v in h],
        lambda h: [("other", b"x"), *h],
        lambda h: [("costplane-schema", b"dev.costplane.v1.UsageBatch")],
    ],
    ids=["pairs", "mapping", "str-values", "bytes-keys", "extra-headers", "full-name-no-version"],
)
def test_header_shapes_other_clients_use(shape: Any) -> None:
    codec = UsageCodec.schemaless()
    events = [e for e in generate(20, seed=6) if e.tenant == "acme"]
    value, headers = codec.encode_batch("acme", events)
    assert codec.decode(value, shape(headers)).events == events


def _fastavro_bytes(schema: Any, record: dict[str, Any]) -> bytes:
    import io

    import fastavro

    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def test_the_specialised_encoder_writes_exactly_what_fastavro_writes() -> None:
    from costplane.publisher.codec import _schemas, _to_record

    schemas = _schemas()
    codec = UsageCodec.schemaless()
    events = [event_from_json_dict(_load(p)) for p in VALID] + list(generate(600, seed=12))
    edge = event_from_json_dict(_load(VALID[0]))
    edge.input_tokens, edge.output_tokens, edge.attempt = 63, 64, 2**31 - 1
    edge.billed_cost_nanos, edge.latency_ms, edge.turn = 2**63 - 1, 0, 0
    edge.attributes = {f"k{i}": "é" * i for i in range(70)}
    edge.user_id, edge.tokens_estimated, edge.result_cache_hit = "", True, False
    events.append(edge)
    for event in events:
        assert codec.encode_event(event)[0] == _fastavro_bytes(schemas.event_fast, _to_record(event))
    for tenant in ("acme", "globex", "ünï"):
        batch = [e for e in events if e.tenant == tenant]
        expected = _fastavro_bytes(schemas.batch_fast, {"tenant": tenant, "events": [_to_record(e) for e in batch]})
        assert codec.encode_batch(tenant, batch)[0] == expected


def test_the_encoder_matches_fastavro_on_random_values_of_every_field() -> None:
    """Differential fuzz of the generated writer: values drawn across every branch it has (table, cached high
    bytes, the checked writers), including negatives, type limits and more distinct values than its caches hold."""
    import dataclasses

    from costplane.publisher.codec import _plain, _schemas, _to_record
    from costplane.publisher.codec_avro import SpecialisedCodec

    schemas = _schemas()
    codec = UsageCodec.schemaless()
    rng = random.Random(41)
    longs = [
        0,
        1,
        63,
        64,
        8191,
        8192,
        8193,
        2**31 - 1,
        2**62,
        2**63 - 1,
        -1,
        -64,
        -65,
        -(2**63),
        1_767_225_600_000,
        253_402_300_799_999,
    ]
    ints = [0, 1, 63, 64, 8191, 8192, 2**31 - 1, -1, -(2**31)]
    strings = ["", "a", "é", "x" * 63, "x" * 64, "y" * 8191, "y" * 8192, "z" * 9000, "日本"]
    kinds: dict[str, Any] = {}
    for f in schemas.event_wire["fields"]:
        t = f["type"]
        optional = isinstance(t, list)
        inner = t[1] if optional else t
        kind = inner.get("type") if isinstance(inner, dict) else inner
        kinds[f["name"]] = (kind, optional, inner)
    names = [f.name for f in dataclasses.fields(UsageEvent)]

    def value(name: str) -> Any:
        kind, optional, inner = kinds[name]
        if optional and rng.random() < 0.3:
            return None
        if kind == "long":
            return rng.choice(longs) if rng.random() < 0.5 else rng.randrange(-(2**63), 2**63) >> rng.randrange(64)
        if kind == "int":
            return rng.choice(ints) if rng.random() < 0.5 else rng.randrange(-(2**31), 2**31) >> rng.randrange(32)
        if kind == "string":
            return rng.choice(strings) if rng.random() < 0.3 else f"s{rng.randrange(5000)}"
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "enum":
            return rng.choice(inner["symbols"])
        return {f"k{rng.randrange(3000)}": rng.choice(strings) for _ in range(rng.randrange(4))}

    events = []
    for base in generate(400, seed=14):
        for name in rng.sample(names, rng.randint(1, len(names))):
            setattr(base, name, value(name))
        events.append(base)

    class TinyCaches(SpecialisedCodec):
        _CACHE_MAX = 4  # every cache fills and is cleared many times over

    tiny = TinyCaches(_plain(schemas.event_wire))
    for event in events:
        expected = _fastavro_bytes(schemas.event_fast, _to_record(event))
        assert codec.encode_event(event)[0] == expected and tiny.encode_event(event) == expected
    batch = [e for e in events if e.tenant == events[0].tenant]
    expected = _fastavro_bytes(
        schemas.batch_fast, {"tenant": events[0].tenant, "events": [_to_record(e) for e in batch]}
    )
    assert codec.encode_batch(events[0].tenant, batch)[0] == expected


@pytest.mark.parametrize(
    "change",
    [
        {"attempt": 2**31},
        {"attempt": -(2**31) - 1},
        {"input_tokens": 2**63},
        {"input_tokens": -(2**63) - 1},
        {"occurred_at": 1.5},
        {"latency_ms": 2**63},
        {"status": "exploded"},
        {"operation": "dance"},
        {"tenant": None},
        {"event_id": None},
        {"session_id": 7},
        {"tokens_estimated": 1},
        {"attributes": {"a": None}},
        {"attributes": {1: "a"}},
    ],
)
def test_the_encoder_refuses_what_the_schema_cannot_hold(change: dict[str, Any]) -> None:
    event = next(generate(1))
    for key, value in change.items():
        setattr(event, key, value)
    with pytest.raises(ValueError):
        UsageCodec.schemaless().encode_event(event)


def _fastavro_events(body: bytes, batch: bool) -> tuple[str | None, list[UsageEvent]]:
    import io

    import fastavro

    from costplane.publisher.codec import _schemas

    schemas = _schemas()
    buf = io.BytesIO(body)
    record = fastavro.schemaless_reader(buf, schemas.batch_fast if batch else schemas.event_fast, None)
    assert isinstance(record, dict)
    if buf.tell() != len(body):
        raise ValueError("trailing bytes")
    if batch:
        return record["tenant"], [UsageEvent(**r) for r in record["events"]]
    return None, [UsageEvent(**record)]


def test_the_specialised_decoder_agrees_with_fastavro_on_mutations() -> None:
    """Differential fuzz: whenever the fast decoder accepts bytes, fastavro reads the very same events from them."""
    from costplane.publisher.codec import _plain, _schemas
    from costplane.publisher.codec_avro import SpecialisedCodec

    fast = SpecialisedCodec(_plain(_schemas().event_wire))
    rng = random.Random(21)
    events = [event_from_json_dict(_load(p)) for p in VALID]
    batch_body = fast.encode_batch("acme", [e for e in events if e.tenant == "acme"])
    assert fast.decode_batch(batch_body) == _fastavro_events(batch_body, True)
    accepted = 0
    for body, batch in [(batch_body, True), (fast.encode_event(events[1]), False)] * 600:
        data = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data))
            if rng.random() < 0.7:
                data[pos] = rng.randrange(256)
            else:
                del data[pos : pos + rng.randint(1, 6)]
        try:
            ours = fast.decode_batch(bytes(data)) if batch else (None, [fast.decode_event(bytes(data))])
        except (ValueError, IndexError):
            continue
        accepted += 1
        assert ours == _fastavro_events(bytes(data), batch)
    assert accepted > 50  # most mutations inside strings and counts still decode: the comparison was exercised


def test_whatever_passes_validation_can_be_encoded() -> None:
    """The publisher validates on emit and encodes at flush: a validated event must never fail a whole batch."""
    import dataclasses

    rng = random.Random(31)
    pool: list[Any] = [
        None,
        "",
        "x",
        "é",
        "\udc80",
        "y" * 513,
        0,
        1,
        -1,
        2**31,
        2**63,
        10**7 + 1,
        True,
        1.5,
        b"bytes",
        ["ok"],
        {"k": "v"},
        {"k": None},
        {1: "v"},
        "ok",
        "chat",
        "batch",
    ]
    names = [f.name for f in dataclasses.fields(UsageEvent)]
    codec = UsageCodec.schemaless()
    passed = 0
    for base in generate(300, seed=13):
        event = base
        for _ in range(rng.randint(1, 3)):
            setattr(event, rng.choice(names), rng.choice(pool))
        try:
            validate_event(event)
        except InvalidEvent:
            continue
        passed += 1
        value, headers = codec.encode_batch(event.tenant, [event])
        assert codec.decode(value, headers).events == [event]
    assert passed > 10
