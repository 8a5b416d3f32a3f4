"""Publisher behaviour without a broker: batching triggers, lenient vs strict, spooling, attempts, adapters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from costplane.config import KafkaSettings, PublisherSettings, load_settings
from costplane.publisher import InMemoryPublisher, InvalidEvent, UsageCodec, UsagePublisher
from costplane.publisher.adapters import usage_from_anthropic, usage_from_openai, usage_from_response
from costplane.publisher.attempts import status_for
from costplane.publisher.spool import DiskSpool, SpooledMessage
from costplane.synthetic import generate


class FakeProducer:
    """Stands in for confluent_kafka.Producer in unit tests: records messages, fails on demand."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.pending: list[Any] = []
        self.fail_with: str | None = None
        self.reachable = True

    def produce(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]],
                on_delivery: Any) -> None:
        self.pending.append((topic, value, key, headers, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        pending, self.pending = self.pending, []
        for topic, value, key, headers, cb in pending:
            if self.fail_with:
                cb(self.fail_with, None)
            else:
                self.sent.append((topic, value, key, headers))
                cb(None, None)
        return len(pending)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        pending, self.pending = self.pending, []
        for _topic, _value, _key, _headers, cb in pending:
            cb("purged", None)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        if not self.reachable:
            raise RuntimeError("broker unreachable")
        return {}

    def __len__(self) -> int:
        return len(self.pending)


def _publisher(tmp_path: Path, producer: FakeProducer, **kw: Any) -> UsagePublisher:
    settings = load_settings(PublisherSettings, spool_dir=tmp_path / "spool", probe_interval_s=0.01, **kw)
    kafka = load_settings(KafkaSettings, topic_prefix="unit")
    return UsagePublisher(kafka, settings, producer=producer, start=False)


def _decoded(producer: FakeProducer) -> list[Any]:
    codec = UsageCodec.schemaless()
    return [e for _t, value, _k, headers in producer.sent for e in codec.decode(value, headers).events]


def test_batches_per_tenant_at_max_events(tmp_path: Path) -> None:
    producer = FakeProducer()
    pub = _publisher(tmp_path, producer, max_batch_events=10, linger_ms=60_000)
    events = [e for e in generate(200, seed=1) if e.tenant == "acme"][:25]
    for e in events:
        assert pub.emit(e)
    pub._drain_buffers(force=False)
    producer.poll()
    assert [len(UsageCodec.schemaless().decode(v, h).events) for _t, v, _k, h in producer.sent] == [10, 10]
    assert all(k == b"acme" and t == "unit.usage" for t, _v, k, _h in producer.sent)
    pub.flush()
    assert _decoded(producer) == events


def test_linger_flushes_a_small_batch(tmp_path: Path) -> None:
    now = [1000.0]
    producer = FakeProducer()
    settings = load_settings(PublisherSettings, spool_dir=tmp_path / "s", linger_ms=20)
    pub = UsagePublisher(load_settings(KafkaSettings), settings, producer=producer, start=False,
                         clock=lambda: now[0])
    pub.emit(next(generate(1)))
    pub._drain_buffers(force=False)
    assert producer.pending == []
    now[0] += 0.021
    pub._drain_buffers(force=False)
    assert len(producer.pending) == 1


def test_lenient_mode_counts_and_never_raises(tmp_path: Path) -> None:
    pub = _publisher(tmp_path, FakeProducer())
    bad = next(generate(1))
    bad.output_tokens = -3
    assert pub.emit(bad) is False
    assert pub.record(tenant="", provider="openai", model="m", request_id="r") is False
    assert pub.record(tenant="acme", nonsense_field=1) is False
    assert pub.metrics.invalid.labels("negative_tokens")._value.get() == 1
    assert pub.metrics.invalid.labels("missing_tenant")._value.get() == 1
    assert pub.metrics.invalid.labels("bad_shape")._value.get() == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [({"input_tokens": -1}, "negative_tokens"), ({"tenant": ""}, "missing_tenant"),
     ({"status": "exploded"}, "unknown_status"), ({"feature": "x" * 1000}, "string_too_long"),
     ({"user_id": "\udcff"}, "not_utf8")],
)
def test_strict_mode_raises_a_clear_value_error(tmp_path: Path, fields: dict[str, Any], reason: str) -> None:
    pub = _publisher(tmp_path, FakeProducer())
    pub.strict = True
    base = {"tenant": "acme", "provider": "openai", "model": "gpt-4o", "request_id": "r1"}
    with pytest.raises(ValueError) as info:
        pub.record(**{**base, **fields})
    assert isinstance(info.value, InvalidEvent) and info.value.reason == reason


def test_record_fills_event_id_and_time(tmp_path: Path) -> None:
    producer = FakeProducer()
    pub = _publisher(tmp_path, producer)
    assert pub.record(tenant="acme", provider="openai", model="gpt-4o", request_id="r1", input_tokens=5)
    pub.flush()
    (event,) = _decoded(producer)
    assert event.event_id[14] == "7" and event.occurred_at > 1_700_000_000_000  # UUIDv7, epoch millis


def test_delivery_failure_spools_and_replay_restores_order(tmp_path: Path) -> None:
    producer = FakeProducer()
    pub = _publisher(tmp_path, producer, max_batch_events=5)
    events = [e for e in generate(400, seed=2) if e.tenant == "globex"][:40]
    producer.fail_with = "broker down"
    producer.reachable = False
    for e in events[:20]:
        pub.emit(e)
    pub._drain_buffers(force=True)
    producer.poll()  # delivery reports fail → spooled
    for e in events[20:]:
        pub.emit(e)
    pub._drain_buffers(force=True)  # broker known down → straight to the spool, behind the earlier batches
    assert producer.sent == [] and not pub._spool.is_empty()
    pub._maybe_replay()
    assert producer.sent == []  # still unreachable
    producer.fail_with, producer.reachable = None, True
    pub._next_probe = 0.0
    pub._maybe_replay()
    assert _decoded(producer) == events and pub._spool.is_empty()
    assert pub.metrics.replayed._value.get() == 8


def test_close_spools_what_was_not_acknowledged_and_a_new_publisher_replays_it(tmp_path: Path) -> None:
    stuck = FakeProducer()
    stuck.fail_with = "timed out"
    pub = _publisher(tmp_path, stuck)
    events = [e for e in generate(100, seed=3)]
    for e in events:
        pub.emit(e)
    pub._broker_up = False
    pub.close()
    assert stuck.sent == [] and not DiskSpool(tmp_path / "spool").is_empty()
    fresh = FakeProducer()
    pub2 = _publisher(tmp_path, fresh)
    pub2._maybe_replay()
    assert sorted(e.event_id for e in _decoded(fresh)) == sorted(e.event_id for e in events)


def test_memory_bound_spills_to_the_spool(tmp_path: Path) -> None:
    pub = _publisher(tmp_path, FakeProducer(), max_buffered_events=100, max_batch_events=1000, linger_ms=60_000)
    for e in generate(250, seed=4):
        pub.emit(e)
    assert pub.stats()["buffered"] < 100
    assert pub.metrics.spooled._value.get() >= 2


def test_spool_round_trip_crc_and_cap(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=1024 * 1024, segment_bytes=1000)
    msgs = [SpooledMessage(b"acme", bytes([i]) * 300, [("h", b"v")]) for i in range(10)]
    for m in msgs:
        spool.append(m)
    got: list[SpooledMessage] = []
    while (oldest := spool.oldest_segment()) is not None:
        path, records = oldest
        got += records
        spool.acknowledge(path, len(records))
    assert got == msgs
    # A torn tail (crash mid-write) is dropped and counted, the good records before it survive.
    spool.append(msgs[0])
    spool.close()
    seg = sorted(tmp_path.glob("seg-*.spool"))[-1]
    seg.write_bytes(seg.read_bytes() + b"\x00\x00\x01\x00garbage")
    path, records = DiskSpool(tmp_path).oldest_segment() or (None, [])
    assert records == [msgs[0]]
    # Cap with drop_oldest: the oldest records go, counted.
    capped = DiskSpool(tmp_path / "cap", max_bytes=2000, segment_bytes=700)
    for m in msgs:
        capped.append(m)
    assert capped.size_bytes() <= 2000 and capped.stats.dropped_full > 0


def test_openai_and_anthropic_usage_become_disjoint_buckets() -> None:
    openai_chat = {"prompt_tokens": 1000, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 600},
                   "completion_tokens_details": {"reasoning_tokens": 200}}
    assert usage_from_openai(openai_chat) == {"input_tokens": 400, "cached_input_tokens": 600,
                                              "cache_write_tokens": 0, "output_tokens": 100, "reasoning_tokens": 200}

    class Details:
        cached_tokens = 50

    class ResponsesUsage:  # SDK-object shape of the responses API
        input_tokens, output_tokens = 200, 80
        input_tokens_details = Details()
        output_tokens_details = None

    class Response:
        usage = ResponsesUsage()

    assert usage_from_response(Response()) == {"input_tokens": 150, "cached_input_tokens": 50,
                                               "cache_write_tokens": 0, "output_tokens": 80, "reasoning_tokens": 0}
    anthropic = {"input_tokens": 20, "cache_read_input_tokens": 3000, "cache_creation_input_tokens": 500,
                 "output_tokens": 90}
    assert usage_from_anthropic(anthropic) == usage_from_response({"usage": anthropic}) == {
        "input_tokens": 20, "cached_input_tokens": 3000, "cache_write_tokens": 500, "output_tokens": 90,
        "reasoning_tokens": 0}


class RateLimitError(Exception):
    status_code = 429


def test_every_attempt_is_recorded_with_its_status() -> None:
    pub = InMemoryPublisher(strict=True)
    with pub.request(tenant="acme", provider="openai", model="gpt-4o", feature="search") as req:
        for exc in (TimeoutError("slow"), RateLimitError("429"), ValueError("bad json")):
            with pytest.raises(type(exc)), req.attempt() as attempt:
                attempt.set_usage(input_tokens=1200)
                raise exc
        with req.attempt() as attempt:
            attempt.usage_from({"prompt_tokens": 1200, "completion_tokens": 40})
    assert [(e.attempt, e.status) for e in pub.events] == [(1, "timeout"), (2, "rate_limited"), (3, "error"),
                                                           (4, "ok")]
    assert len({e.request_id for e in pub.events}) == 1
    assert all(e.input_tokens == 1200 for e in pub.events) and pub.events[-1].output_tokens == 40


def test_async_attempts_and_cancellation() -> None:
    pub = InMemoryPublisher(strict=True)

    async def call() -> None:
        req = pub.request(tenant="acme", provider="anthropic", model="claude-3-5-haiku-20241022")
        async with req.attempt() as attempt:
            attempt.set_usage(input_tokens=10, output_tokens=2)
        with pytest.raises(asyncio.CancelledError):
            async with req.attempt():
                raise asyncio.CancelledError()

    asyncio.run(call())
    assert [e.status for e in pub.events] == ["ok", "cancelled"]
    assert status_for(KeyboardInterrupt()) == "cancelled"


def test_in_memory_publisher_is_lenient_by_default() -> None:
    pub = InMemoryPublisher()
    assert pub.record(tenant="acme", provider="p", model="m", request_id="r", input_tokens=-1) is False
    assert pub.events == [] and pub.rejected[0].reason == "negative_tokens"
