"""One validity decision per record, the same for the stream role, the sink, replays and restarts.

The clock-skew rule compares an event's ``occurred_at`` with the Kafka record's own timestamp, not with the
reader's clock: the record's timestamp is part of the record, so a sink a day behind, a restart or a replay of
week-old data decides exactly as the stream role did. Only events dated too far after their record are rejected
(a producer clock running ahead); old events are always valid, and windows ignore what falls outside them.
:meth:`UsageCodec.decode` stays the single place of the rule; this module only says what both readers pass it.
"""

from __future__ import annotations

from collections.abc import Mapping

from costplane.publisher.codec import DecodedMessage, Headers, UsageCodec


def decode_record(
    codec: UsageCodec,
    value: bytes | None,
    headers: Headers | Mapping[str, bytes] | None,
    record_timestamp_ms: int | None,
    max_clock_skew_ms: int | None,
) -> DecodedMessage:
    """Decode and validate one record's value; ``max_clock_skew_ms`` None (history) applies no clock-skew rule."""
    return codec.decode(value, headers, now_ms=record_timestamp_ms, max_clock_skew_ms=max_clock_skew_ms)


def timestamp_ms(timestamp: float | None, unit_ms: float = 1.0) -> int | None:
    """A record timestamp in epoch milliseconds from ``timestamp`` counted in units of ``unit_ms`` milliseconds
    (1 for librdkafka's integer ms, 1000 for Faust's float seconds); None when the record carries none (≤ 0)."""
    if timestamp is None or timestamp <= 0:
        return None
    return round(timestamp * unit_ms)
