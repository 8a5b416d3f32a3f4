"""The one validity decision of a record: an event's time against the record's own timestamp, never a clock.

Plain data only: the same bytes and the same record timestamp give the same answer whoever reads them and when.
"""

from __future__ import annotations

import uuid

from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.streams.pipeline.validity import decode_record, timestamp_ms

DAY = 86_400_000
RECORD_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the record's timestamp
CODEC = UsageCodec.schemaless()


def event(occurred_at: int) -> UsageEvent:
    return UsageEvent(
        event_id=str(uuid.UUID(int=occurred_at)),
        occurred_at=occurred_at,
        tenant="acme",
        provider="openai",
        model="gpt-4o-mini",
        request_id="r1",
        attempt=1,
        status="ok",
        input_tokens=10,
        output_tokens=5,
    )


def reasons(occurred_at: int, record_ms: int | None, skew: int | None = DAY) -> list[str]:
    value, headers = CODEC.encode_batch("acme", [event(occurred_at)])
    decoded = decode_record(CODEC, value, headers, record_ms, skew)
    assert len(decoded.events) + len(decoded.rejects) == 1
    return [r.reason for r in decoded.rejects]


def test_old_events_are_valid_however_old() -> None:
    for age in (0, 1, DAY, DAY + 1, 7 * DAY, 3650 * DAY):
        assert reasons(RECORD_MS - age, RECORD_MS) == [], age


def test_events_dated_beyond_the_skew_after_their_record_are_quarantined() -> None:
    assert reasons(RECORD_MS + DAY, RECORD_MS) == []  # at the bound: accepted
    assert reasons(RECORD_MS + DAY + 1, RECORD_MS) == ["clock_skew"]
    assert reasons(RECORD_MS + 7 * DAY, RECORD_MS) == ["clock_skew"]


def test_the_record_timestamp_is_the_reference_not_the_time_of_reading() -> None:
    # A week-old record with a week-old event: valid, whether it is read now or a year from now (nothing else is
    # an input). The same event in a record written a week before it was dated: quarantined, by every reader.
    week_ago = RECORD_MS - 7 * DAY
    assert reasons(week_ago, week_ago) == []
    assert reasons(RECORD_MS, week_ago) == ["clock_skew"]


def test_no_record_timestamp_or_no_bound_applies_no_rule() -> None:
    assert reasons(RECORD_MS + 3650 * DAY, None) == []
    assert reasons(RECORD_MS + 3650 * DAY, RECORD_MS, skew=None) == []  # usage.backfill: history as it comes


def test_record_timestamps_in_milliseconds() -> None:
    assert timestamp_ms(RECORD_MS) == RECORD_MS  # librdkafka: integer milliseconds
    assert timestamp_ms((RECORD_MS + 123) / 1000.0, 1000.0) == RECORD_MS + 123  # Faust: float seconds
    assert timestamp_ms(-1) is None and timestamp_ms(0) is None and timestamp_ms(None) is None  # not available
