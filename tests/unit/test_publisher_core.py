"""Publisher behaviour without a broker: batching triggers, lenient vs strict, spooling, attempts, adapters."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from costplane.config import KafkaSettings, PublisherSettings, load_settings
from costplane.publisher import InMemoryPublisher, InvalidEvent, UsageCodec, UsagePublisher
from costplane.publisher.spool import DiskSpool, SpooledMessage
from costplane.synthetic import generate


class FakeProducer:
    """Stands in for confluent_kafka.Producer in unit tests: records messages, fails on demand."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.pending: list[Any] = []
        self.fail_with: str | None = None
        self.reachable = True

    def produce(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]], on_delivery: Any) -> None:
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
    assert pub.metrics.emitted._value.get() == 25 and pub.metrics.delivered._value.get() == 20
    assert pub.metrics.buffered._value.get() == 5
    assert [len(UsageCodec.schemaless().decode(v, h).events) for _t, v, _k, h in producer.sent] == [10, 10]
    assert all(k == b"acme" and t == "unit.usage" for t, _v, k, _h in producer.sent)
    pub.flush()
    assert _decoded(producer) == events


def test_linger_flushes_a_small_batch(tmp_path: Path) -> None:
    now = [1000.0]
    producer = FakeProducer()
    settings = load_settings(PublisherSettings, spool_dir=tmp_path / "s", linger_ms=20)
    pub = UsagePublisher(load_settings(KafkaSettings), settings, producer=producer, start=False, clock=lambda: now[0])
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
    [
        ({"input_tokens": -1}, "negative_tokens"),
        ({"tenant": ""}, "missing_tenant"),
        ({"status": "exploded"}, "unknown_status"),
        ({"feature": "x" * 1000}, "string_too_long"),
        ({"user_id": "\udcff"}, "not_utf8"),
    ],
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


def test_record_ids_follow_the_order_of_the_calls_and_a_given_id_is_kept(tmp_path: Path) -> None:
    producer = FakeProducer()
    pub = _publisher(tmp_path, producer)
    for i in range(300):
        assert pub.record(tenant="acme", provider="openai", model="gpt-4o", input_tokens=i)
    given = "019b76da-a800-763c-a6e0-439d6ec9d286"
    assert pub.record(tenant="acme", provider="openai", model="gpt-4o", event_id=given)
    pub.flush()
    events = _decoded(producer)
    ids = [e.event_id for e in events[:300]]
    assert ids == sorted(ids) and len(set(ids)) == 300 and [e.input_tokens for e in events[:300]] == list(range(300))
    assert all(e.request_id == e.event_id for e in events)  # a request of one attempt
    assert events[-1].event_id == given


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
    pub.close(timeout=0.3)  # reachable, but every delivery fails: close retries for its budget, then spools
    leftover = DiskSpool(tmp_path / "spool")
    assert stuck.sent == [] and not leftover.is_empty()
    leftover.close()
    fresh = FakeProducer()
    pub2 = _publisher(tmp_path, fresh)
    pub2._maybe_replay()
    assert sorted(e.event_id for e in _decoded(fresh)) == sorted(e.event_id for e in events)


def test_memory_bound_moves_the_oldest_batches_out_of_ram(tmp_path: Path) -> None:
    producer = FakeProducer()
    pub = _publisher(tmp_path, producer, max_buffered_events=100, max_batch_events=1000, linger_ms=60_000)
    events = list(generate(250, seed=4))
    for e in events:
        assert pub.emit(e)
        assert pub.stats()["buffered"] <= 100
    assert pub.metrics.overflow._value.get() >= 2
    pub.flush()
    assert sorted(e.event_id for e in _decoded(producer)) == sorted(e.event_id for e in events)


def test_memory_bound_with_the_broker_down_spills_to_the_spool(tmp_path: Path) -> None:
    pub = _publisher(tmp_path, FakeProducer(), max_buffered_events=100, max_batch_events=1000, linger_ms=60_000)
    pub._broker_up = False
    for e in generate(250, seed=4):
        pub.emit(e)
    assert pub.stats()["buffered"] <= 100
    assert pub.metrics.spooled._value.get() >= 2 and not pub._spool.is_empty()


def test_byte_bound_counts_too(tmp_path: Path) -> None:
    pub = _publisher(
        tmp_path,
        FakeProducer(),
        max_buffered_bytes=64 * 1024,
        max_batch_events=10_000,
        max_batch_bytes=1024 * 1024,
        linger_ms=60_000,
    )
    big = {f"k{i}": "v" * 200 for i in range(20)}  # ~4 KiB of attributes per event
    for i in range(40):
        assert pub.record(tenant="acme", provider="openai", model="gpt-4o", request_id=f"r{i}", attributes=big)
    assert pub._batcher.buffered_bytes <= 64 * 1024 and pub.metrics.overflow._value.get() >= 1


def test_in_memory_publisher_is_lenient_by_default() -> None:
    pub = InMemoryPublisher()
    assert pub.record(tenant="acme", provider="p", model="m", request_id="r", input_tokens=-1) is False
    assert pub.events == [] and pub.rejected[0].reason == "negative_tokens"


def test_a_forked_child_gets_its_own_thread_and_spool_slot(tmp_path: Path) -> None:
    import os

    settings = load_settings(PublisherSettings, spool_dir=tmp_path / "spool", linger_ms=60_000)
    pub = UsagePublisher(load_settings(KafkaSettings), settings, producer=FakeProducer(), start=True)
    parent_event = next(generate(1))
    pub.emit(parent_event)  # the parent's buffered event stays the parent's
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what it sees, then leave without running the parent's cleanup
        try:
            ok = (
                pub._thread is not None
                and pub._thread.is_alive()
                and pub.stats()["buffered"] == 0
                and pub._spool.directory == tmp_path / "spool" / "slot-1"
                and pub.emit(next(generate(1)))
            )
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"ok"
    assert pub._spool.directory == tmp_path / "spool"
    # Whenever the parent's thread sends it (a busy machine may flush before we look), the parent delivers
    # exactly its own event: the child's emit never reached the parent's client.
    pub.flush()
    assert _decoded(pub._producer) == [parent_event]  # type: ignore[arg-type]
    pub.close()


def test_a_broker_back_is_noticed_even_when_the_spool_could_not_keep_anything(tmp_path: Path) -> None:
    producer = FakeProducer()
    pub = _publisher(tmp_path, producer, spool_when_full="refuse_newest")
    pub._spool.max_bytes = 10  # nothing fits: every spool write is refused, and counted as lost
    pub._broker_up = False
    pub.emit(next(generate(1)))
    pub._drain_buffers(force=True)
    assert pub._spool.is_empty() and pub.metrics.lost.labels("spool_full")._value.get() == 1
    pub._maybe_replay()  # broker reachable again: probed although the spool is empty
    assert pub._broker_up
    event = next(generate(2, seed=9))
    pub.emit(event)
    pub.flush()
    assert _decoded(producer) == [event]


def test_all_brokers_down_sends_new_batches_to_the_spool_at_once(tmp_path: Path) -> None:
    from confluent_kafka import KafkaError

    producer = FakeProducer()
    pub = _publisher(tmp_path, producer)
    pub._on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    pub.emit(next(generate(1)))
    pub._drain_buffers(force=True)
    assert producer.pending == [] and pub.metrics.spooled._value.get() == 1
    pub._on_client_error(KafkaError(KafkaError._TRANSPORT))  # other client errors only log
    pub._next_probe = 0.0
    pub._maybe_replay()
    assert pub._broker_up and len(_decoded(producer)) == 1 and pub._spool.is_empty()


def test_registry_mode_output_is_read_by_confluents_avro_deserializer(tmp_path: Path) -> None:
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    producer = FakeProducer()
    kafka = load_settings(KafkaSettings, topic_prefix="unit", schema_registry_url="mock://publisher-registry")
    settings = load_settings(PublisherSettings, spool_dir=tmp_path / "spool")
    pub = UsagePublisher(kafka, settings, producer=producer, start=False)
    events = [e for e in generate(60, seed=8) if e.tenant == "acme"]
    for e in events:
        pub.emit(e)
    pub.flush()
    ((topic, value, key, headers),) = producer.sent
    assert value[0] == 0 and headers == [] and key == b"acme"
    record = AvroDeserializer(pub._codec.registry)(value, SerializationContext(topic, MessageField.VALUE))
    assert [r["event_id"] for r in record["events"]] == [e.event_id for e in events]


def test_an_unusable_spool_directory_degrades_instead_of_crashing_the_app(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be")
    settings = load_settings(PublisherSettings, spool_dir=blocker / "spool")
    producer = FakeProducer()
    pub = UsagePublisher(load_settings(KafkaSettings), settings, producer=producer, start=False)
    assert pub.metrics.errors.labels("spool_open")._value.get() == 1
    event = next(generate(1))
    assert pub.emit(event)
    pub.flush()
    assert _decoded(producer) == [event]
    producer.fail_with = "broker down"
    pub.emit(next(generate(2, seed=3)))
    pub.flush()
    assert pub.metrics.lost.labels("spool_io")._value.get() == 1  # counted, not raised
    with pytest.raises(OSError):
        UsagePublisher(load_settings(KafkaSettings), settings, producer=FakeProducer(), start=False, strict=True)


def test_nothing_raises_into_the_app_in_lenient_mode(tmp_path: Path) -> None:
    class BrokenCodec(UsageCodec):
        def encode_batch_bodies(self, tenant: str, bodies: Any) -> tuple[bytes, list[tuple[str, bytes]]]:
            raise RuntimeError("encoder bug")

    class BrokenEventCodec(UsageCodec):
        def valid_event_encoder(self) -> Any:
            def broken(event: Any) -> bytes | None:
                raise RuntimeError("encoder bug")

            return broken

    broken_emit = UsagePublisher(
        load_settings(KafkaSettings),
        load_settings(PublisherSettings, spool_dir=tmp_path / "s3"),
        producer=FakeProducer(),
        codec=BrokenEventCodec(),
        start=False,
    )
    assert broken_emit.emit(next(generate(1))) is False  # emit encodes: its failure is counted, not raised
    assert broken_emit.metrics.errors.labels("emit")._value.get() == 1
    broken_emit.close()

    settings = load_settings(PublisherSettings, spool_dir=tmp_path / "spool")
    pub = UsagePublisher(
        load_settings(KafkaSettings), settings, producer=FakeProducer(), codec=BrokenCodec(), start=False
    )
    assert pub.emit(None) is False  # type: ignore[arg-type]
    assert pub.metrics.invalid.labels("bad_shape")._value.get() == 1
    assert pub.emit(next(generate(1)))
    pub.flush()  # the batch cannot be encoded: counted as lost, not raised
    assert pub.metrics.lost.labels("encode")._value.get() == 1
    pub.close()
    assert pub.emit(next(generate(1))) is False and pub.metrics.errors.labels("emit_after_close")._value.get() == 1
    strict = UsagePublisher(
        load_settings(KafkaSettings),
        settings.model_copy(update={"spool_dir": tmp_path / "s2"}),
        producer=FakeProducer(),
        start=False,
        strict=True,
    )
    with pytest.raises(InvalidEvent):
        strict.emit(None)  # type: ignore[arg-type]


def test_slots_left_by_gone_processes_are_adopted_and_drained(tmp_path: Path) -> None:
    codec = UsageCodec.schemaless()
    base = tmp_path / "spool"
    events = [e for e in generate(400, seed=12) if e.tenant == "acme"][:50]
    dead = DiskSpool(base / "slot-2", segment_bytes=2000)  # a worker that spooled and never came back
    for start in range(0, 50, 10):
        value, headers = codec.encode_batch("acme", events[start : start + 10])
        dead.append(SpooledMessage(b"acme", value, headers))
    dead.close()
    live = DiskSpool(base / "slot-1")  # a live worker's slot: never touched
    live.append(SpooledMessage(b"acme", *codec.encode_batch("acme", events[:1])))
    producer = FakeProducer()
    pub = _publisher(tmp_path, producer)
    assert pub._spool.directory == base
    for _ in range(20):
        pub._maybe_replay()
    assert sorted(e.event_id for e in _decoded(producer)) == sorted(e.event_id for e in events)
    assert not any((base / "slot-2").glob("seg-*.spool")) and pub._orphan is None
    assert any((base / "slot-1").glob("seg-*.spool"))
    live.close()


def test_a_fatally_failed_client_is_replaced_and_its_batches_spooled(tmp_path: Path) -> None:
    class FatalError:
        def code(self) -> int:
            return -150

        def fatal(self) -> bool:
            return True

    producer = FakeProducer()
    pub = _publisher(tmp_path, producer)
    pub.emit(next(generate(1)))
    pub._drain_buffers(force=True)  # one batch queued in the client
    pub._on_client_error(FatalError())
    pub._replace_producer()
    assert pub.metrics.errors.labels("client_fatal")._value.get() == 1
    assert pub.metrics.spooled._value.get() == 1 and not pub._broker_up  # purged into the spool, probe next
    pub._maybe_replay()
    assert len(_decoded(producer)) == 1 and pub._spool.is_empty()


def test_close_rides_out_a_blip_and_delivers_the_spool(tmp_path: Path) -> None:
    producer = FakeProducer()
    pub = _publisher(tmp_path, producer)
    events = [e for e in generate(300, seed=13) if e.tenant == "acme"][:30]
    pub._broker_up = False
    for e in events:
        pub.emit(e)
    pub._drain_buffers(force=True)  # spooled while the broker was believed down
    pub._broker_up = True  # it answered again, but deliveries still fail for a moment (a settling broker)
    producer.fail_with = "not yet"
    threading.Timer(0.1, lambda: setattr(producer, "fail_with", None)).start()
    pub.close(timeout=5)
    assert sorted(e.event_id for e in _decoded(producer)) == sorted(e.event_id for e in events)
    assert DiskSpool(tmp_path / "spool").is_empty()


def test_unusual_but_valid_events_take_the_long_way_and_arrive_intact(tmp_path: Path) -> None:
    producer = FakeProducer()
    pub = _publisher(tmp_path, producer, linger_ms=60_000)
    codec = UsageCodec.schemaless()
    events = [e for e in generate(40, seed=8) if e.tenant == "acme"][:6]
    events[0].feature = "résumé"  # non-ASCII text: valid, not on the fast path
    events[1].attributes = {"région": "île"}
    events[2].input_tokens = 9_999_999  # large but within the sanity bound: fast path, high bytes
    events[3].latency_ms = 2**40
    assert codec.encode_valid_event(events[0]) is None and codec.encode_valid_event(events[1]) is None
    assert codec.encode_valid_event(events[2]) is not None
    for e in events:
        assert pub.emit(e)
    pub.flush()
    assert _decoded(producer) == events
    assert pub.metrics.invalid.labels("negative_tokens")._value.get() == 0
    bad = next(generate(1, seed=9))
    bad.input_tokens = -1
    assert not pub.emit(bad) and pub.metrics.invalid.labels("negative_tokens")._value.get() == 1


class FirstProduceWaits(FakeProducer):
    """The first produce() blocks until released, like a background ship caught mid-way by an app's flush()."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def produce(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]], on_delivery: Any) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(10)
        super().produce(topic, value, key, headers, on_delivery)


def test_a_flush_racing_the_background_ship_keeps_a_tenants_batches_in_order(tmp_path: Path) -> None:
    producer = FirstProduceWaits()
    pub = _publisher(tmp_path, producer, max_batch_events=10, linger_ms=60_000)
    events = [e for e in generate(400, seed=3) if e.tenant == "acme"][:15]
    for e in events[:10]:
        assert pub.emit(e)
    background = threading.Thread(target=pub._drain_buffers, args=(False,))  # takes the full batch, then waits
    background.start()
    assert producer.entered.wait(10)
    for e in events[10:]:
        assert pub.emit(e)
    flusher = threading.Thread(target=pub.flush, args=(5.0,))
    flusher.start()
    flusher.join(0.3)  # the flush must wait for the batch already taken instead of overtaking it
    producer.release.set()
    background.join(10)
    flusher.join(10)
    producer.poll()
    assert [e.event_id for e in _decoded(producer)] == [e.event_id for e in events]


def test_unrecognised_usage_is_counted_and_the_event_still_goes_out(tmp_path: Path) -> None:
    pub = _publisher(tmp_path, FakeProducer())
    with pub.request(tenant="acme", provider="vertex", model="gemini-x") as req, req.attempt() as attempt:
        attempt.usage_from({"mystery": 1}, prompt="four score and seven years ago")
    assert pub.metrics.unrecognised_usage.labels("dict")._value.get() == 1
    assert pub.stats()["buffered"] == 1
    pub.close()
