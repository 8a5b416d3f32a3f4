"""100 000 generated and mutated messages through decode and validate: every bad item dead-lettered once, every
good event counted once, nothing raised. The truth is built from the messages as they are made.

No broker here: the stream worker's per-message steps are ``codec.decode`` and ``dead_letters``
(streams/pipeline/decode.py), run on the same bytes a producer would send. A hypothesis property holds decode and
``validate_event`` together.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.validation import InvalidEvent, validate_event
from costplane.streams.dlq import H_ID, dead_letters

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
MESSAGES = 100_000
NOW = 1_790_000_000_000
CODEC = UsageCodec.schemaless()

#: Mutations whose outcome is known: each makes exactly one event invalid.
BAD_EVENT = (
    lambda e: replace(e, input_tokens=-1),
    lambda e: replace(e, output_tokens=10**9),
    lambda e: replace(e, attempt=0),
    lambda e: replace(e, occurred_at=0),
    lambda e: replace(e, event_id="not-a-uuid"),
    lambda e: replace(e, team="a\x00b"),
    lambda e: replace(e, user_id="u\nX"),
    lambda e: replace(e, tenant="A5c}:decision:x"),  # also another tenant than the batch's
    lambda e: replace(e, model=""),
    lambda e: replace(e, provider="x" * 600),
)


def good_event(rng: random.Random, tenant: str) -> UsageEvent:
    return UsageEvent(
        event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        occurred_at=NOW - 1000,
        tenant=tenant,
        provider="openai",
        model="gpt-4o-mini",
        request_id=f"r{rng.getrandbits(32)}",
        attempt=1,
        status="ok",
        input_tokens=rng.randrange(0, 5000),
        output_tokens=rng.randrange(0, 500),
        team=rng.choice(["growth", "a,user=b", None]),
        user_id=rng.choice(["u1", "b,user=X", "é"]),
    )


def test_a_hundred_thousand_mutated_messages() -> None:
    rng = random.Random(20261205)
    expected_good: list[str] = []
    expected_bad = 0
    decoded_good: list[str] = []
    letters = 0
    ids: set[str] = set()
    for offset in range(MESSAGES):
        tenant = rng.choice(["acme", "globex", "a.b-c_d:e@f+g/h"])
        events = [good_event(rng, tenant) for _ in range(rng.randrange(1, 5))]
        shape = rng.random()
        if shape < 0.55:  # a good batch
            value, headers = CODEC.encode_batch(tenant, events)
            expected_good += [e.event_id for e in events]
        elif shape < 0.85:  # some events of the batch made invalid, each in one known way
            bad = {i for i in range(len(events)) if rng.random() < 0.5} or {0}
            events = [rng.choice(BAD_EVENT)(e) if i in bad else e for i, e in enumerate(events)]
            value, headers = CODEC.encode_batch(tenant, events)
            expected_good += [e.event_id for i, e in enumerate(events) if i not in bad]
            expected_bad += len(bad)
        elif shape < 0.92:  # bytes that are no batch at all
            value, headers = rng.randbytes(rng.randrange(1, 200)), CODEC.encode_batch(tenant, events)[1]
            expected_bad += 1
        elif shape < 0.97:  # a good batch cut short
            value, headers = CODEC.encode_batch(tenant, events)
            value = value[: rng.randrange(0, len(value) - 1)]
            expected_bad += 1
        else:  # a schema the worker does not read
            value, headers = CODEC.encode_batch(tenant, events)[0], [("costplane-schema", b"Invoice")]
            expected_bad += 1
        decoded = CODEC.decode(value, headers, now_ms=NOW, max_clock_skew_ms=3_600_000)
        decoded_good += [e.event_id for e in decoded.events]
        records = dead_letters(
            decoded.rejects,
            topic="usage",
            partition=0,
            offset=offset,
            key=tenant.encode(),
            value=value,
            headers=headers,
        )
        letters += len(records)
        ids |= {dict(r.headers)[H_ID].decode() for r in records}
    assert sorted(decoded_good) == sorted(expected_good)  # every good event once, no bad one counted
    assert letters == expected_bad == len(ids)  # every bad item dead-lettered once, each with its own id


EVENT_FIELDS = st.fixed_dictionaries(
    {
        "tenant": st.one_of(st.sampled_from(["acme", "a}b", "", "x" * 200]), st.text(max_size=8)),
        "team": st.one_of(st.none(), st.text(max_size=8)),
        "user_id": st.one_of(st.none(), st.text(max_size=8)),
        "input_tokens": st.integers(min_value=-5, max_value=20_000_000),
        "attempt": st.integers(min_value=-1, max_value=3),
        "occurred_at": st.sampled_from([0, NOW - 10, NOW + 10**8]),
    }
)


@settings(max_examples=400, deadline=None)
@given(EVENT_FIELDS)
def test_decode_agrees_with_validation(fields: dict[str, object]) -> None:
    event = replace(good_event(random.Random(1), "acme"), **fields)  # type: ignore[arg-type]
    try:
        value, headers = CODEC.encode_event(event)
    except (ValueError, TypeError, OverflowError):
        return  # Avro itself cannot hold it (e.g. a lone surrogate): a producer could never send it
    decoded = CODEC.decode(value, headers, now_ms=NOW, max_clock_skew_ms=3_600_000)
    try:
        validate_event(event, now_ms=NOW, max_clock_skew_ms=3_600_000)
    except InvalidEvent as exc:
        assert (decoded.events, [r.reason for r in decoded.rejects]) == ([], [exc.reason])
    else:
        assert [e.event_id for e in decoded.events] == [event.event_id] and decoded.rejects == []
