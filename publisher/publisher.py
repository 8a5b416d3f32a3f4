"""``UsagePublisher``: the two lines a service adds to make every model-call attempt visible.

Contract with the app: ``emit``/``record`` never block and never raise (lenient mode, the default) — they validate
and encode the event in one pass, append its bytes to a per-tenant batch and return. A background thread frames
each closed batch (a join: one Kafka message per batch), hands it to an idempotent confluent-kafka producer, and
moves anything the broker cannot take to a durable local spool, which it replays in order once the broker answers
again. ``strict=True`` turns bad input into a ``ValueError`` (``InvalidEvent``) for apps that prefer to fail loudly
in tests.
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from costplane.config import KafkaSettings, PublisherSettings, load_settings
from costplane.publisher.batching import Batch, BatchLimits, TenantBatcher
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.publisher.ids import UUIDv7Source
from costplane.publisher.metrics import ClientLogger, PublisherMetrics, RateLimitedLog
from costplane.publisher.recording import EventRecording
from costplane.publisher.spool import (
    DiskSpool,
    NoSpool,
    SpooledMessage,
    SpoolFull,
    SpoolLocked,
    has_segments,
    open_spool,
    spool_slots,
)
from costplane.publisher.validation import InvalidEvent, validate_event


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` the publisher uses (a fake one drives the unit tests)."""

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        headers: list[tuple[str, bytes]],
        on_delivery: Callable[[Any, Any], None],
    ) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...
    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None: ...
    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any: ...
    def __len__(self) -> int: ...


#: How often a publisher with an empty spool looks for slots left by processes that are gone.
_ADOPT_INTERVAL_S = 30.0


def build_producer(
    kafka: KafkaSettings, settings: PublisherSettings, on_error: Callable[[Any], None] | None = None
) -> ProducerLike:
    """An idempotent, compressing producer whose failures surface within ``delivery_timeout_ms``.

    Its own queue is bounded (64 MiB / 100 000 batches): when it is full, ``produce`` raises ``BufferError`` and
    the batch goes to the spool. ``on_error`` receives client-level errors (e.g. all brokers down) from ``poll``.
    """
    from confluent_kafka import Producer

    conf = build_producer_config(kafka, settings)
    if on_error is not None:
        conf["error_cb"] = on_error
    return Producer(conf)  # type: ignore[return-value]


def build_producer_config(kafka: KafkaSettings, settings: PublisherSettings) -> dict[str, Any]:
    """The confluent-kafka configuration of the publisher's producer (the benchmark's bare floors use it too)."""
    return {
        **kafka.confluent_config(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": settings.compression,
        "message.timeout.ms": settings.delivery_timeout_ms,
        "queue.buffering.max.messages": 100_000,
        "queue.buffering.max.kbytes": 64 * 1024,
        "socket.connection.setup.timeout.ms": 3000,
        "reconnect.backoff.max.ms": 1000,
        "log_level": 4,
        "logger": ClientLogger(),  # rate-limited into the app's structured log instead of raw stderr lines
    }


def _purge_into_reports(producer: ProducerLike) -> None:
    """Fail everything the client still holds and serve every resulting delivery report (each spools its batch).

    ``flush`` rather than a few ``poll(0)`` calls: reports of purged in-flight messages can arrive a moment later,
    and a report never served would be a batch neither delivered nor spooled.
    """
    producer.purge(True, True, True)
    producer.flush(5.0)


def _close_at_exit(ref: weakref.ref[UsagePublisher]) -> None:
    publisher = ref()
    if publisher is not None:
        publisher.close()


def _client_error_handler(ref: weakref.ref[UsagePublisher]) -> Callable[[Any], None]:
    def on_error(err: Any) -> None:
        publisher = ref()
        if publisher is not None:
            publisher._on_client_error(err)

    return on_error


def _reinit_in_child(ref: weakref.ref[UsagePublisher]) -> None:
    publisher = ref()
    if publisher is not None:
        publisher._after_fork()


class UsagePublisher(EventRecording):
    """Batching, spooling usage-event publisher. Thread-safe; one per process is enough."""

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        settings: PublisherSettings | None = None,
        *,
        codec: UsageCodec | None = None,
        producer: ProducerLike | None = None,
        strict: bool = False,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        start: bool = True,
    ) -> None:
        self.kafka = kafka or load_settings(KafkaSettings)
        self.settings = settings or load_settings(PublisherSettings)
        self.topic = self.kafka.topic("usage")
        self.strict = strict
        self.metrics = PublisherMetrics(registry)
        self._codec = codec or (
            UsageCodec.with_registry(self.kafka.schema_registry_url)
            if self.kafka.schema_registry_url
            else UsageCodec.schemaless()
        )
        self._encode_valid = self._codec.valid_event_encoder()
        self._own_producer = producer is None
        self._producer = (
            producer
            if producer is not None
            else build_producer(self.kafka, self.settings, _client_error_handler(weakref.ref(self)))
        )
        self._log = RateLimitedLog()
        self._spool = self._open_spool()
        s = self.settings
        self._clock = clock
        self._new_id = UUIDv7Source()
        self._lock = threading.Lock()
        self._ship_lock = threading.Lock()
        self._batcher = TenantBatcher(
            BatchLimits(
                max_events=s.max_batch_events,
                max_bytes=s.max_batch_bytes,
                linger_s=s.linger_ms / 1000,
                max_buffered_events=s.max_buffered_events,
                max_buffered_bytes=s.max_buffered_bytes,
            ),
            clock,
        )
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._closing = False  # the same fact as ``_closed``, as a plain attribute: emit tests it on every event
        self._counter_lock = threading.Lock()
        self._accepted_reported = 0
        self._broker_up = True
        self._next_probe = 0.0
        self._orphan: DiskSpool | None = None
        self._next_adopt = 0.0
        self._producer_fatal = False
        self._thread: threading.Thread | None = None
        self._start = start
        if start:
            self._start_thread()
        # Flush at interpreter exit without keeping the publisher alive through the atexit registry; survive a
        # fork (pre-forking web servers) by giving the child its own client, thread and spool slot.
        atexit.register(_close_at_exit, weakref.ref(self))
        os.register_at_fork(after_in_child=functools.partial(_reinit_in_child, weakref.ref(self)))

    def _open_spool(self) -> DiskSpool | NoSpool:
        """This process's spool slot; in lenient mode a missing one degrades to counting, never to a crash."""
        s = self.settings
        try:
            return open_spool(
                s.spool_dir, max_bytes=s.spool_max_bytes, fsync=s.spool_fsync, when_full=s.spool_when_full
            )
        except (OSError, SpoolLocked) as exc:
            if self.strict:
                raise
            self.metrics.errors.labels("spool_open").inc()
            self._log.warning(
                "spool_open",
                "no spool: batches the broker cannot take will be lost",
                directory=str(s.spool_dir),
                error=repr(exc),
            )
            return NoSpool(repr(exc))

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="costplane-publisher", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        """In a forked child: the parent's thread and Kafka client did not come along, and the parent keeps its
        buffered events and spool slot. Start clean: an empty batcher, a new client, a spool slot of our own."""
        s = self.settings
        self._lock = threading.Lock()
        self._ship_lock = threading.Lock()
        self._wake = threading.Event()
        self._batcher = TenantBatcher(self._batcher.limits, self._clock)
        self._counter_lock = threading.Lock()
        self._accepted_reported = 0
        self._log = RateLimitedLog()
        if self._own_producer:
            self._producer = build_producer(self.kafka, s, _client_error_handler(weakref.ref(self)))
        self._spool = self._open_spool()
        self._orphan = None  # the parent's adopted slot stays the parent's
        self._broker_up = True
        if self._start and not self._closed.is_set():
            self._start_thread()

    # -- the app-facing API ----------------------------------------------------------------------------------
    def emit(self, event: UsageEvent) -> bool:
        """Queue one event; True when accepted.

        Lenient (default): a refused event returns False and is counted, and nothing — not even an internal bug —
        raises into the caller. Strict: bad input raises ``InvalidEvent`` (a ``ValueError``).
        """
        try:
            # Validate and encode in one pass: the codec's checked writer reads each field once, checks it against
            # the validation rules and encodes it. What it does not decide (a broken rule, or only unusual input
            # such as non-ASCII text) goes the long way: validate_event, which names the reason, and the encoder.
            body = self._encode_valid(event)
            if body is None:
                body = self._validate_and_encode(event)
                if body is None:
                    return False
            if self._closing:
                return self._refuse_after_close()
            # acquire/release rather than ``with``: the with statement's special-method lookups cost as much as
            # the lock itself, on every event.
            lock = self._lock
            lock.acquire()
            try:
                batcher = self._batcher
                if not batcher.add_encoded(event.tenant, body, len(body)):
                    return True  # the common case: appended, nothing closed, memory within bounds
                spill = batcher.take_oldest() if batcher.over_limit else None
            finally:
                lock.release()
            self._wake.set()  # a batch closed (or memory is full): the sender has work
            if spill:
                self._spill(spill)
            return True
        except InvalidEvent:
            raise  # only reaches here in strict mode
        except Exception as exc:
            if self.strict:
                raise
            self.metrics.errors.labels("emit").inc()
            self._log.warning("emit", "usage event dropped by an internal error", error=repr(exc))
            return False

    def _validate_and_encode(self, event: UsageEvent) -> bytes | None:
        """The long way for what the fast path handed on: the body, or None when the event is refused (counted)."""
        try:
            validate_event(event)
        except InvalidEvent as exc:
            self.metrics.invalid.labels(exc.reason).inc()
            if self.strict:
                raise
            self._log.warning(f"invalid:{exc.reason}", "usage event refused", reason=exc.reason, field=exc.field)
            return None
        except (AttributeError, TypeError) as exc:  # not a UsageEvent at all
            self.metrics.invalid.labels("bad_shape").inc()
            if self.strict:
                raise InvalidEvent("bad_shape", None, f"not a usage event: {exc}") from None
            self._log.warning("invalid:bad_shape", "usage event refused", reason="bad_shape", error=str(exc))
            return None
        return self._codec.encode_event_body(event)

    def _refuse_after_close(self) -> bool:
        self.metrics.errors.labels("emit_after_close").inc()
        if self.strict:
            raise RuntimeError("emit() after close()")
        self._log.warning("emit_after_close", "usage event emitted after close(); dropped")
        return False

    def _spill(self, spill: list[Batch]) -> None:
        for batch in spill:
            # Memory bound reached (the sender is behind or the broker is away): the caller moves the oldest batch
            # out of RAM itself — to the client, or to the spool when the broker is down or the client queue full.
            self.metrics.overflow.inc()
            self._ship(batch)

    def _refuse_bad_shape(self, detail: str) -> bool:
        self.metrics.invalid.labels("bad_shape").inc()
        if self.strict:
            raise InvalidEvent("bad_shape", None, detail) from None
        self._log.warning("invalid:bad_shape", "usage event refused", reason="bad_shape", error=detail)
        return False

    def unrecognised_usage(self, shape: str, **context: Any) -> None:
        """A usage object of unknown shape: counted, and logged at most once per interval per shape.

        The event itself still goes out, with tokens counted offline and ``tokens_estimated`` set, so the call is
        never recorded as free; this makes the gap visible to whoever watches the app's metrics and logs.
        """
        self.metrics.unrecognised_usage.labels(shape[:64]).inc()
        self._log.warning(
            f"unrecognised_usage:{shape[:64]}",
            "usage object of unknown shape; tokens estimated",
            shape=shape,
            **context,
        )

    def flush(self, timeout: float = 10.0) -> int:
        """Send everything buffered and wait up to ``timeout`` for acknowledgements; returns messages still out."""
        self._drain_buffers(force=True)
        return int(self._producer.flush(timeout))

    def close(self, timeout: float | None = None) -> None:
        """Flush, deliver what the spool holds while the broker answers, spool whatever is left. Idempotent.

        Waits at most ``timeout`` (default ``close_timeout_s``) for the broker; runs at interpreter exit too, so a
        normal exit loses nothing: what the broker did not acknowledge is on disk for the next start.
        """
        if self._closed.is_set():
            return
        self._closing = True
        self._closed.set()
        self._wake.set()
        try:
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=5.0)
            wait = self.settings.close_timeout_s if timeout is None else timeout
            deadline = time.monotonic() + wait  # real time, whatever clock the batching uses
            self._drain_buffers(force=True)
            if self._broker_up or self._probe(force=True):
                self._producer.flush(wait)
                self._drain_spool_until(deadline)
            # Whatever is still queued or in flight goes to the spool through its failed delivery report.
            _purge_into_reports(self._producer)
        except Exception as exc:
            if self.strict:
                raise
            self.metrics.errors.labels("close").inc()
            self._log.warning("close", "publisher close failed", error=repr(exc))
        finally:
            self._spool.close()
            if self._orphan is not None:
                self._orphan.close()
                self._orphan = None

    def stats(self) -> dict[str, Any]:
        """A snapshot for apps without Prometheus."""
        with self._lock:
            buffered, accepted = self._batcher.buffered_events, self._batcher.accepted
        self._sync_counters(buffered, accepted)
        return {
            "buffered": buffered,
            "broker_up": self._broker_up,
            "spool_bytes": self._spool.size_bytes(),
            "spool": self._spool.stats,
            "emitted": accepted,
        }

    def __enter__(self) -> UsagePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- background work -------------------------------------------------------------------------------------
    def _run(self) -> None:
        linger_s = self.settings.linger_ms / 1000
        while not self._closed.is_set():
            self._wake.wait(max(linger_s / 2, 0.001))
            self._wake.clear()
            try:
                if self._producer_fatal:
                    self._replace_producer()
                self._drain_buffers(force=False)
                self._producer.poll(0)
                self._maybe_replay()
            except Exception as exc:  # noqa: BLE001 - the app must never see this thread die
                self.metrics.errors.labels("background").inc()
                self._log.warning("background", "publisher background error", error=repr(exc))

    def _drain_buffers(self, force: bool) -> None:
        # Taking and shipping under one lock: a flush() racing the background thread would otherwise produce a
        # tenant's later batches before the earlier ones the thread had taken, and the partition would hold them
        # out of order (event-time consumers judge minutes in that order). emit only needs ``_lock``.
        with self._ship_lock:
            with self._lock:
                due = self._batcher.take_due(force=force)
                buffered, accepted = self._batcher.buffered_events, self._batcher.accepted
            self._sync_counters(buffered, accepted)
            for batch in due:
                self._ship(batch)

    def _sync_counters(self, buffered: int, accepted: int) -> None:
        """Publish emit's plain counts to Prometheus off the hot path (every background loop, flush and stats)."""
        with self._counter_lock:
            if accepted > self._accepted_reported:
                self.metrics.emitted.inc(accepted - self._accepted_reported)
                self._accepted_reported = accepted
        self.metrics.buffered.set(buffered)

    def _ship(self, batch: Batch) -> None:
        """Frame one batch of encoded events (a join) and send it, or spool it when it cannot be sent."""
        try:
            value, headers = self._codec.encode_batch_bodies(batch.tenant, batch.events)
        except Exception as exc:  # noqa: BLE001 - validated events should always encode; never raise into the app
            self.metrics.lost.labels("encode").inc()
            self._log.warning(
                "encode", "batch could not be encoded; dropped", error=repr(exc), events=len(batch.events)
            )
            return
        self._send(SpooledMessage(batch.tenant.encode(), value, headers), len(batch.events))

    def _send(self, msg: SpooledMessage, events: int) -> None:
        # While the broker is down new batches go straight to the spool (they would only time out in the client);
        # while it is up they are sent at once and the spool drains beside them, oldest segment first.
        if not self._broker_up:
            self._to_spool(msg)
            return
        try:
            self._producer.produce(
                self.topic,
                value=msg.value,
                key=msg.key,
                headers=msg.headers,
                on_delivery=self._delivery_callback(msg, events),
            )
            self.metrics.batches.inc()
        except BufferError:
            self._to_spool(msg)
        except Exception as exc:  # noqa: BLE001 - a client error becomes a spooled batch, never an app error
            self.metrics.errors.labels("produce").inc()
            self._log.warning("produce", "produce failed; spooling", error=repr(exc))
            self._to_spool(msg)

    def _replace_producer(self) -> None:
        """Swap a fatally failed client for a new one; its queued batches are failed into the spool first."""
        self._producer_fatal = False
        self.metrics.errors.labels("client_fatal").inc()
        _purge_into_reports(self._producer)
        if self._own_producer:
            self._producer = build_producer(self.kafka, self.settings, _client_error_handler(weakref.ref(self)))
        self._broker_up = False  # probe the new client before replaying through it
        self._next_probe = 0.0

    def _on_client_error(self, err: Any) -> None:
        """All brokers unreachable: send new batches to the spool now rather than after the delivery timeout.

        What the client already holds still waits for its own timeout and lands in the spool through the delivery
        report; the probe brings the broker back as soon as it answers.
        """
        code = err.code() if hasattr(err, "code") else None
        from confluent_kafka import KafkaError

        if callable(getattr(err, "fatal", None)) and err.fatal():
            # An idempotent producer can hit a fatal error (e.g. after a long outage); it then fails everything.
            # The background thread replaces it; what it held comes back through failed reports into the spool.
            self._producer_fatal = True
            self._log.warning("client_fatal", "kafka client failed fatally; replacing it", error=str(err))
        elif code == KafkaError._ALL_BROKERS_DOWN:
            if self._broker_up:
                self._log.warning("all_brokers_down", "no broker reachable; spooling new batches")
            self._broker_up = False
            self._next_probe = self._clock() + self.settings.probe_interval_s
        elif code != KafkaError._TRANSPORT:  # connection failures are already in the client's own (rate-limited) log
            self._log.warning(f"client_error:{code}", "kafka client error", error=str(err))

    def _delivery_callback(self, msg: SpooledMessage, events: int) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, _message: Any) -> None:
            if err is None:
                self._broker_up = True
                self.metrics.delivered.inc(events)
                return
            self._broker_up = False
            self._next_probe = 0.0
            self._log.warning("delivery", "delivery failed; spooling", error=str(err))
            self._to_spool(msg)

        return on_delivery

    def _to_spool(self, msg: SpooledMessage) -> None:
        try:
            self._spool.append(msg)
            self.metrics.spooled.inc()
        except SpoolFull:
            self.metrics.lost.labels("spool_full").inc()
            self._log.warning("spool_full", "spool full; batch refused")
        except OSError as exc:
            self.metrics.lost.labels("spool_io").inc()
            self._log.warning("spool_io", "spool write failed", error=repr(exc))

    def _drain_spool_until(self, deadline: float) -> None:
        """At close, with the broker answering: deliver the spool, riding out short blips (a restarted broker can
        drop its connections once more while it settles) by probing again until ``deadline``."""
        while not self._spool.is_empty():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if (self._broker_up or self._probe(force=True)) and self._replay_segment(self._spool):
                continue
            time.sleep(min(self.settings.probe_interval_s, remaining))

    def _probe(self, *, force: bool = False) -> bool:
        """Is a broker believed down answering again? A cheap metadata request, at most once per
        ``probe_interval_s`` (unless ``force``). Probed whether or not the spool holds anything: a spool that could
        not be written (disk full) must not leave the publisher believing the broker down forever."""
        now = self._clock()
        if now < self._next_probe and not force:
            return False
        self._next_probe = now + self.settings.probe_interval_s
        if len(self._producer) > 0:
            return False  # earlier messages are still timing out; let them land in the spool first
        try:
            self._producer.list_topics(self.topic, timeout=min(1.0, self.settings.probe_interval_s))
        except Exception:  # noqa: BLE001 - any metadata failure means "still down"
            return False
        self._broker_up = True
        return True

    def _maybe_replay(self, *, deadline: float | None = None) -> None:
        """Drain the spool oldest segment first: one segment per call while the broker is up (so fresh batches
        keep flowing in between); while it is down, only probe it. With its own spool empty, the background
        thread also drains slots left behind by processes that are gone."""
        if not self._broker_up and not self._probe():
            return
        if self._spool.is_empty():
            if deadline is None:
                self._replay_orphans()
            return
        while deadline is None or self._clock() < deadline:
            if not self._replay_segment(self._spool) or deadline is None:
                break  # failed, empty, or one segment per background iteration

    def _replay_segment(self, spool: DiskSpool | NoSpool) -> bool:
        """Send the oldest segment of ``spool`` and delete it once every record is acknowledged."""
        oldest = spool.oldest_segment()
        if oldest is None:
            return False
        path, messages = oldest
        results: list[bool] = []

        def on_delivery(err: Any, _m: Any) -> None:
            results.append(err is None)

        for m in messages:
            self._produce_blocking(m, on_delivery)
        self._producer.flush(self.settings.delivery_timeout_ms / 1000 + 1)
        if len(results) == len(messages) and all(results):
            spool.acknowledge(path, len(messages))
            self.metrics.replayed.inc(len(messages))
            return True
        self._broker_up = False  # keep the segment; a later replay may duplicate, the worker dedups
        return False

    def _replay_orphans(self) -> None:
        """Adopt, one at a time, a spool slot no live process holds (a web worker that never came back) and
        drain it a segment per call, so its records do not wait for some process to take that slot again."""
        if self._orphan is None:
            now = self._clock()
            if now < self._next_adopt:
                return
            self._next_adopt = now + _ADOPT_INTERVAL_S
            own = self._spool.directory
            for directory in spool_slots(self.settings.spool_dir):
                if directory == own or not has_segments(directory):
                    continue
                try:
                    self._orphan = DiskSpool(directory, max_bytes=self.settings.spool_max_bytes)
                    break
                except (SpoolLocked, OSError):
                    continue
            if self._orphan is None:
                return
        if not self._replay_segment(self._orphan) or self._orphan.is_empty():
            self._orphan.close()
            self._orphan = None

    def _produce_blocking(self, msg: SpooledMessage, on_delivery: Callable[[Any, Any], None]) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic, value=msg.value, key=msg.key, headers=msg.headers, on_delivery=on_delivery
                )
                return
            except BufferError:
                self._producer.poll(0.05)
