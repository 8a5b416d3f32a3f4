"""Publisher benchmark: emit latency vs a bare encode+produce floor, and sustained acknowledged throughput.

Run against the dev stack (``costplane dev up``):  ``python -m bench.bench_publisher``

* Latency floor: fastavro-encode one event and hand it to a bare ``confluent_kafka.Producer.produce`` — what any
  Avro publisher must at least do per event without batching. ``UsagePublisher.emit`` is measured on the same
  events in the same run; the ratio is emit / floor.
* Throughput floor: fastavro-encode the same events in per-tenant batches of 100 and produce them with a bare
  producer, then flush — what a straightforward Avro batch publisher does in this process.
* Throughput ceiling: the same batches encoded *before* the clock starts, then only produced and flushed — what
  the Kafka client and broker take from one process here, the most any publisher could reach.
* The same publisher with fastavro as its encoder (``validate_event``, then ``fastavro.schemaless_writer`` per
  event): the plain-library alternative to the codec's generated writers, measured in the same run, so the
  generated code keeps its place only while this row needs it.
* The publisher is driven as an app would (emit in a loop, then close) and counted only when the broker
  acknowledged every event. Floor, ceiling and publisher use the same producer settings as the publisher
  (``build_producer``) and run one after another on the same broker.
"""

from __future__ import annotations

import argparse
import gc
import io
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import fastavro
from confluent_kafka import Producer

from bench.common import percentile, write_section
from costplane.config import KafkaSettings, PublisherSettings, load_settings
from costplane.publisher import UsagePublisher
from costplane.publisher.codec import (
    BATCH,
    SCHEMA_HEADER,
    SCHEMA_VERSION,
    VERSION_HEADER,
    Headers,
    UsageCodec,
    _schemas,
    _to_record,
)
from costplane.publisher.event import UsageEvent
from costplane.publisher.publisher import build_producer_config
from costplane.publisher.validation import validate_event
from costplane.synthetic import generate


def _producer(kafka: KafkaSettings) -> Producer:
    """A bare producer configured as the publisher's own (idempotent, acks=all, lz4, 5 ms linger)."""
    conf = dict(build_producer_config(kafka, load_settings(PublisherSettings)))
    conf.pop("logger", None)
    return Producer(conf)


def _fastavro_batch(schema: Any, tenant: str, batch: list[UsageEvent]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, {"tenant": tenant, "events": [_to_record(e) for e in batch]})
    return buf.getvalue()


def _per_tenant_batches(events: list[UsageEvent], size: int = 100) -> list[tuple[str, list[UsageEvent]]]:
    """The events cut as the publisher cuts them: per tenant, ``size`` at a time, remainders at the end."""
    open_batches: dict[str, list[UsageEvent]] = {}
    out: list[tuple[str, list[UsageEvent]]] = []
    for e in events:
        batch = open_batches.setdefault(e.tenant, [])
        batch.append(e)
        if len(batch) == size:
            out.append((e.tenant, batch))
            open_batches[e.tenant] = []
    out += [(tenant, batch) for tenant, batch in open_batches.items() if batch]
    return out


def _produce_all(producer: Producer, topic: str, messages: Iterable[tuple[bytes, bytes, Headers]]) -> None:
    for key, value, headers in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:  # the client's queue is full: let it deliver, as the publisher does
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("the broker did not acknowledge every floor message")


def floor_latency(kafka: KafkaSettings, events: list[UsageEvent], topic: str) -> list[float]:
    producer = _producer(kafka)
    schema = _schemas().event_fast
    lat = []
    for i, e in enumerate(events):
        t0 = time.perf_counter()
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, _to_record(e))
        producer.produce(topic, value=buf.getvalue(), key=e.tenant.encode())
        lat.append(time.perf_counter() - t0)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(30)
    return sorted(lat)


class FastavroCodec(UsageCodec):
    """The codec with fastavro as the event encoder: every event validated by ``validate_event``, then encoded by
    ``fastavro.schemaless_writer`` with the parsed schema (the bytes are the same)."""

    def valid_event_encoder(self) -> Callable[[UsageEvent], bytes | None]:
        return lambda _event: None  # no fast path: the publisher validates, then calls encode_event_body

    def encode_event_body(self, event: UsageEvent) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, _schemas().event_fast, _to_record(event))
        return buf.getvalue()


def emit_latency(
    kafka: KafkaSettings, settings: PublisherSettings, events: list[UsageEvent], codec: UsageCodec | None = None
) -> list[float]:
    publisher = UsagePublisher(kafka, settings, codec=codec)
    lat = []
    for e in events:
        t0 = time.perf_counter()
        publisher.emit(e)
        lat.append(time.perf_counter() - t0)
    publisher.close()
    return sorted(lat)


class Run(NamedTuple):
    """One throughput run: acknowledged events per second of wall time, and process CPU seconds per event.

    The CPU figure (every thread of this process: Python and the Kafka client's) moves less with the load of
    other processes on a shared machine than the rate does, which waits whenever this process is not scheduled.
    """

    rate: float
    cpu: float


class _Timer:
    def __init__(self) -> None:
        gc.collect()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def run(self, events: int) -> Run:
        return Run(events / (time.perf_counter() - self.wall), (time.process_time() - self.cpu) / events)


def floor_throughput(kafka: KafkaSettings, events: list[UsageEvent], topic: str) -> Run:
    """fastavro batch encode + bare produce: a straightforward Avro batch publisher."""
    schema = _schemas().batch_fast
    headers = [(SCHEMA_HEADER, BATCH.encode()), (VERSION_HEADER, SCHEMA_VERSION)]
    producer = _producer(kafka)
    timer = _Timer()
    _produce_all(
        producer,
        topic,
        (
            (tenant.encode(), _fastavro_batch(schema, tenant, batch), headers)
            for tenant, batch in _per_tenant_batches(events)
        ),
    )
    return timer.run(len(events))


def ceiling_throughput(kafka: KafkaSettings, events: list[UsageEvent], topic: str) -> Run:
    """Bare produce of batches encoded before the clock starts: what the client and broker take."""
    codec = UsageCodec.schemaless()
    messages = [(tenant.encode(), *codec.encode_batch(tenant, batch)) for tenant, batch in _per_tenant_batches(events)]
    producer = _producer(kafka)
    timer = _Timer()
    _produce_all(producer, topic, messages)
    return timer.run(len(events))


def publisher_throughput(
    kafka: KafkaSettings, settings: PublisherSettings, events: list[UsageEvent], codec: UsageCodec | None = None
) -> tuple[Run, int]:
    """The publisher driven as an app drives it: emit every event, then close; counted when acknowledged."""
    publisher = UsagePublisher(kafka, settings, codec=codec)
    timer = _Timer()
    for e in events:
        publisher.emit(e)
    publisher.close(timeout=60)
    delivered = int(publisher.metrics.delivered._value.get())
    return timer.run(delivered), delivered


def cpu_costs(events: list[UsageEvent], rounds: int = 11) -> dict[str, float]:
    """CPU seconds per event of the steps behind emit and flush: thread CPU time, the best of ``rounds`` taken
    in turn, so neither time spent descheduled nor a neighbour's burst on a shared machine inflates them.

    ``checked``: the one pass emit makes (validate and encode, each field read once); ``batch``: framing a batch of
    100 such bodies at flush; and, for comparison, the long way an event takes when the fast path hands it on
    (``validate_event`` + the plain encoder) and fastavro's batch encoding.
    """
    codec = UsageCodec.schemaless()
    schema = _schemas().batch_fast
    bodies = [codec.encode_event_body(e) for e in events]
    steps: dict[str, Callable[[], object]] = {
        "checked": lambda: [codec.encode_valid_event(e) for e in events],
        "batch": lambda: [codec.encode_batch_bodies("acme", bodies[i : i + 100]) for i in range(0, len(bodies), 100)],
        "validate": lambda: [validate_event(e) for e in events],
        "encode": lambda: [codec.encode_batch("acme", events[i : i + 100]) for i in range(0, len(events), 100)],
        "fastavro": lambda: [_fastavro_batch(schema, "acme", events[i : i + 100]) for i in range(0, len(events), 100)],
    }
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, step in steps.items():
            gc.collect()
            t0 = time.thread_time()
            step()
            best[name] = min(best[name], (time.thread_time() - t0) / len(events))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-events", type=int, default=20_000)
    parser.add_argument("--throughput-events", type=int, default=200_000)
    parser.add_argument("--no-write", action="store_true", help="Print only; do not update docs/benchmarks.md.")
    args = parser.parse_args()
    kafka = load_settings(KafkaSettings, topic_prefix=f"bench{uuid.uuid4().hex[:6]}")
    spool = Path(tempfile.mkdtemp())
    settings = load_settings(PublisherSettings, spool_dir=spool)
    events = list(generate(args.latency_events, seed=1))
    topic = kafka.topic("floor")
    # Warm both paths (connections, metadata) before measuring.
    floor_latency(kafka, events[:500], topic)
    emit_latency(kafka, settings, events[:500])
    floor = floor_latency(kafka, events, topic)
    emit = emit_latency(kafka, settings, list(generate(args.latency_events, seed=2)))
    fa_emit = emit_latency(kafka, settings, list(generate(args.latency_events, seed=2)), FastavroCodec())
    bulk = list(generate(args.throughput_events, seed=3))
    floor_tp = floor_throughput(kafka, bulk, topic)
    ceiling_tp = ceiling_throughput(kafka, bulk, topic)
    pub_tp, delivered = publisher_throughput(kafka, settings, list(generate(args.throughput_events, seed=4)))
    fa_tp, fa_delivered = publisher_throughput(
        kafka, settings, list(generate(args.throughput_events, seed=4)), FastavroCodec()
    )
    cpu = cpu_costs(bulk[:5_000])
    checked = UsageCodec.schemaless().encode_valid_event
    fast_share = sum(checked(e) is not None for e in bulk) / len(bulk)
    us = 1e6
    met = pub_tp.rate >= 100_000
    f50, f99, e50, e99 = (percentile(floor, 50), percentile(floor, 99), percentile(emit, 50), percentile(emit, 99))
    fa99 = percentile(fa_emit, 99)
    fa_meets = fa99 <= 50e-6 and fa_tp.rate >= 50_000
    body = f"""
Command: `python -m bench.bench_publisher` (dev stack running; {args.latency_events} latency samples,
{args.throughput_events} events for throughput). Every throughput row counts events the broker acknowledged;
"CPU" is this process's CPU time per event (all its threads, the Kafka client's included) in the same run.

| figure | publisher | floor (same run) | ratio | target |
|---|---|---|---|---|
| emit latency p50 | {e50 * us:.1f} µs | {f50 * us:.1f} µs (fastavro encode + bare produce, 1 event) \
| {e50 / f50:.2f}× | ≤ 2× |
| emit latency p99 | {e99 * us:.1f} µs | {f99 * us:.1f} µs | {e99 / f99:.2f}× | ≤ 50 µs |
| … with fastavro as the encoder | {fa99 * us:.1f} µs (p50 {percentile(fa_emit, 50) * us:.1f} µs) \
| {f99 * us:.1f} µs | {fa99 / f99:.2f}× | ≤ 50 µs |
| sustained, acknowledged | {pub_tp.rate:,.0f} events/s ({delivered:,} delivered; CPU {pub_tp.cpu * us:.1f} µs) \
| {floor_tp.rate:,.0f} events/s (fastavro batch encode + bare produce; CPU {floor_tp.cpu * us:.1f} µs) \
| {pub_tp.rate / floor_tp.rate:.2f}× | ≥ 100 000 events/s |
| … with fastavro as the encoder | {fa_tp.rate:,.0f} events/s ({fa_delivered:,} delivered; CPU {
        fa_tp.cpu * us:.1f} µs) \
| {floor_tp.rate:,.0f} events/s | {fa_tp.rate / floor_tp.rate:.2f}× | ≥ 50 000 events/s |
| … against the ceiling | | {ceiling_tp.rate:,.0f} events/s (bare produce of pre-encoded batches; \
CPU {ceiling_tp.cpu * us:.1f} µs) | {pub_tp.rate / ceiling_tp.rate:.2f}× | — |

The ≥ 100 000 events/s target is {"**met**" if met else "**not met**"} in this run ({pub_tp.rate:,.0f} events/s).
With fastavro as its encoder (`validate_event`, then `fastavro.schemaless_writer` per event) the publisher
{"would meet" if fa_meets else "does **not** meet"} the plain targets of emit p99 ≤ 50 µs and ≥ 50 000 events/s
({fa99 * us:.1f} µs, {fa_tp.rate:,.0f} events/s): {
        "the generated writers are not needed for them"
        if fa_meets
        else "that is the row the codec's generated writers (`publisher/codec_avro.py`) are there for"
    }.
At its measured CPU per event the publisher would reach {1 / pub_tp.cpu:,.0f} events/s with a core to itself
for this process; the rate falls below that when the machine's two cores are shared (by the broker, the Kafka
client's threads and any other work) — compare the floor's and ceiling's rates with their CPU in the same way.

CPU per event in this process (same run, best of 11): emit's one pass that validates and encodes
{cpu["checked"] * us:.1f} µs ({fast_share:.0%} of these events take it; the rest go through `validate_event`,
{cpu["validate"] * us:.1f} µs, and the plain encoder, {cpu["encode"] * us:.1f} µs), framing a batch at flush
{cpu["batch"] * us:.2f} µs; fastavro's batch encoding would be {cpu["fastavro"] * us:.1f} µs. The client and
broker take {ceiling_tp.rate:,.0f} events/s from one process, so the publisher's limit is its own Python time per
event (emit p50 {e50 * us:.1f} µs, which includes that one pass, plus the background thread's share per batch),
serialised by the GIL.

`emit` validates, encodes and appends the bytes to a per-tenant batch; a flush only joins them, produces one
message per batch and counts one delivery report per message.
"""
    print(body)
    if not args.no_write:
        write_section("Publisher", body)


if __name__ == "__main__":
    main()
