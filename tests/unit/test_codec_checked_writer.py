"""The checked writer (validate and encode in one pass, the publisher's emit) against validate_event and the encoder.

Its promise: whatever it accepts, ``validate_event`` accepts too and the plain encoder writes the very same bytes;
what it refuses is only handed on (None), never decided. And ordinary events must take the fast path, or it
would save nothing.
"""

from __future__ import annotations

import dataclasses
import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

from costplane.publisher.codec import UsageCodec, _plain, _schemas
from costplane.publisher.codec_avro import SpecialisedCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.jsonio import event_from_json_dict
from costplane.publisher.validation import RULES, InvalidEvent, validate_event
from costplane.synthetic import generate

EXAMPLES = Path(str(resources.files("costplane.schemas"))) / "examples"
NAMES = [f.name for f in dataclasses.fields(UsageEvent)]


class Text(str):
    """A str subclass: validate_event accepts it, the fast path may or may not."""


def _valid_examples() -> list[UsageEvent]:
    return [event_from_json_dict(json.loads(p.read_text())) for p in sorted((EXAMPLES / "valid").glob("*.json"))]


def _accepts(event: UsageEvent) -> bool:
    try:
        validate_event(event)
    except (InvalidEvent, AttributeError, TypeError):
        return False
    return True


POOL: list[Any] = [
    None,
    "",
    "x",
    "é",
    "\udc80",
    "日本",
    "y" * 512,
    "y" * 513,
    Text("acme"),
    "ok",
    "chat",
    "batch",
    "exploded",
    "019b76da-a800-763c-a6e0-439d6ec9d286",
    "019b76da-a800-763c-a6e0-439d6ec9d286\n",
    "019B76DA-A800-763C-A6E0-439D6EC9D28G",
    "019b76da_a800-763c-a6e0-439d6ec9d286",
    0,
    1,
    -1,
    63,
    64,
    8191,
    8192,
    10_000_000,
    10_000_001,
    2**31 - 1,
    2**31,
    2**63 - 1,
    2**63,
    -(2**63),
    253_402_300_799_999,
    253_402_300_800_000,
    1_767_225_600_000,
    True,
    False,
    1.0,
    1.5,
    b"bytes",
    ["ok"],
    {},
    {"k": "v"},
    {"k": None},
    {1: "v"},
    {"": "v"},
    {"k": "é"},
    {"k": "v" * 513},
    {f"k{i}": "v" for i in range(64)},
    {f"k{i}": "v" for i in range(65)},
]


def test_every_valid_example_and_synthetic_event_takes_the_fast_path() -> None:
    codec = UsageCodec.schemaless()
    events = [
        e for e in _valid_examples() if all(isinstance(v, str) is False or v.isascii() for v in dataclasses.astuple(e))
    ]
    events += list(generate(3000, seed=17))
    assert len(events) > 3000
    for event in events:
        assert codec.encode_valid_event(event) == codec.encode_event_body(event)


def test_what_the_fast_path_accepts_validate_event_accepts_with_the_same_bytes() -> None:
    """Differential fuzz over every field with values on both sides of every rule."""
    codec = UsageCodec.schemaless()
    rng = random.Random(23)
    fast = refused_but_valid = invalid = 0
    for base in generate(4000, seed=19):
        event = base
        for _ in range(rng.randint(1, 3)):
            setattr(event, rng.choice(NAMES), rng.choice(POOL))
        body = codec.encode_valid_event(event)
        valid = _accepts(event)
        if body is not None:
            fast += 1
            assert valid, f"fast path accepted an event validate_event refuses: {event}"
            assert body == codec.encode_event_body(event)
        elif valid:
            refused_but_valid += 1  # unusual but valid: the publisher's slow path takes it
        else:
            invalid += 1
    assert fast > 200 and invalid > 2000 and refused_but_valid > 20  # every outcome was exercised


def test_the_fast_path_hands_on_non_events_instead_of_raising() -> None:
    codec = UsageCodec.schemaless()
    for thing in (None, 1, "event", {"event_id": "x"}, object()):
        assert codec.encode_valid_event(thing) is None  # type: ignore[arg-type]


def test_its_caches_stay_bounded_and_correct() -> None:
    class TinyCaches(SpecialisedCodec):
        _CACHE_MAX = 4

    tiny = TinyCaches(_plain(_schemas().event_wire))
    for event in generate(500, seed=29):
        event.user_id, event.latency_ms = f"user-{event.event_id[-6:]}", 10_000 + int(event.event_id[-4:], 16)
        assert tiny.encode_valid_event(event) == tiny.encode_event(event)
    caches = {k: v for k, v in tiny.encode_valid_event.__globals__.items() if k.startswith(("cache_", "highs_"))}
    assert len(caches) > 10 and all(len(c) <= TinyCaches._CACHE_MAX for c in caches.values())
    assert len(caches["cache_15"]) > 0 and len(caches["highs_24"]) > 0  # user_id and latency_ms went through them


def test_the_rules_name_every_field_in_schema_order() -> None:
    assert list(RULES) == NAMES
