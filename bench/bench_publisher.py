"""Publisher benchmark: emit latency vs a bare encode+produce floor, and sustained acknowledged throughput.

Run against the dev stack (``costplane dev up``):  ``python -m bench.bench_publisher``

* Latency floor: fastavro-encode one event and hand it to a bare ``confluent_kafka.Producer.produce`` — what any
  Avro publisher must at least do per event without batching. ``UsagePublisher.emit`` is measured on the same
  events in the same run; the ratio is emit / floor.
* Throughput floor: encode the same events in batches of 100 and produce them with a bare producer, then flush —
  the most an Avro batch publisher can do in this process. The publisher is driven as an app would (emit in a
  loop, then close) and counted only when the broker acknowledged every event.
"""

from __future__ import annotations

import argparse
import gc
import io
import tempfile
import time
import uuid
from pathlib import Path

import fastavro
from confluent_kafka import Producer

from bench.common import percentile, write_section
from costplane.config import KafkaSettings, PublisherSettings, load_settings
from costplane.publisher import UsagePublisher
from costplane.publisher.codec import UsageCodec, _schemas, _to_record
from costplane.publisher.event import UsageEvent
from costplane.publisher.validation import validate_event
from costplane.synthetic import generate


def _producer(kafka: KafkaSettings) -> Producer:
    return Producer({**kafka.confluent_config(), "enable.idempotence": True, "linger.ms": 5,
                     "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})


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


def emit_latency(kafka: KafkaSettings, settings: PublisherSettings, events: list[UsageEvent]) -> list[float]:
    publisher = UsagePublisher(kafka, settings)
    lat = []
    for e in events:
        t0 = time.perf_counter()
        publisher.emit(e)
        lat.append(time.perf_counter() - t0)
    publisher.close()
    return sorted(lat)


def floor_throughput(kafka: KafkaSettings, events: list[UsageEvent], topic: str) -> float:
    codec = UsageCodec.schemaless()
    producer = _producer(kafka)
    by_tenant: dict[str, list[UsageEvent]] = {}
    t0 = time.perf_counter()
    for e in events:
        batch = by_tenant.setdefault(e.tenant, [])
        batch.append(e)
        if len(batch) == 100:
            value, headers = codec.encode_batch(e.tenant, batch)
            producer.produce(topic, value=value, key=e.tenant.encode(), headers=headers)
            producer.poll(0)
            by_tenant[e.tenant] = []
    for tenant, batch in by_tenant.items():
        if batch:
            value, headers = codec.encode_batch(tenant, batch)
            producer.produce(topic, value=value, key=tenant.encode(), headers=headers)
    assert producer.flush(60) == 0
    return len(events) / (time.perf_counter() - t0)


def publisher_throughput(
    kafka: KafkaSettings, settings: PublisherSettings, events: list[UsageEvent]
) -> tuple[float, int]:
    publisher = UsagePublisher(kafka, settings)
    t0 = time.perf_counter()
    for e in events:
        publisher.emit(e)
    publisher.close(timeout=60)
    elapsed = time.perf_counter() - t0
    delivered = int(publisher.metrics.delivered._value.get())
    return delivered / elapsed, delivered


def cpu_costs(events: list[UsageEvent], rounds: int = 5) -> tuple[float, float]:
    """Seconds per event of the two CPU steps every event pays in this process: validation and batch encoding.

    Together with emit's own bookkeeping they bound what one Python process can publish, whatever the broker does.
    Best of ``rounds``, so a neighbour's burst on a shared machine does not inflate them.
    """
    codec = UsageCodec.schemaless()
    validate = encode = float("inf")
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        for e in events:
            validate_event(e)
        validate = min(validate, (time.perf_counter() - t0) / len(events))
        t0 = time.perf_counter()
        for start in range(0, len(events), 100):
            codec.encode_batch("acme", events[start:start + 100])
        encode = min(encode, (time.perf_counter() - t0) / len(events))
    return validate, encode


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
    bulk = list(generate(args.throughput_events, seed=3))
    floor_tp = floor_throughput(kafka, bulk, topic)
    pub_tp, delivered = publisher_throughput(kafka, settings, list(generate(args.throughput_events, seed=4)))
    validate_s, encode_s = cpu_costs(bulk[:5_000])
    ceiling = 1 / (percentile(emit, 50) + encode_s)
    us = 1e6
    target_note = (
        "The ≥ 100 000 events/s target is reached on this machine." if pub_tp >= 100_000 else
        "The ≥ 100 000 events/s target is **not** reached on this machine: even the floor (Avro encoding and\n"
        f"`produce`, nothing else) stays at {floor_tp:,.0f} events/s, because fastavro spends "
        f"{encode_s * us:.1f} µs on one event\nof this 30-field, union-heavy schema here."
    )
    f50, f99, e50, e99 = (percentile(floor, 50), percentile(floor, 99), percentile(emit, 50), percentile(emit, 99))
    body = f"""
Command: `python -m bench.bench_publisher` (dev stack running; {args.latency_events} latency samples,
{args.throughput_events} events for throughput).

| figure | publisher | floor (same run) | ratio | target |
|---|---|---|---|---|
| emit latency p50 | {e50 * us:.1f} µs | {f50 * us:.1f} µs (encode + bare produce, 1 event) | {e50 / f50:.2f}× | ≤ 2× |
| emit latency p99 | {e99 * us:.1f} µs | {f99 * us:.1f} µs | {e99 / f99:.2f}× | — |
| sustained, acknowledged | {pub_tp:,.0f} events/s ({delivered:,} delivered) \
| {floor_tp:,.0f} events/s (batch encode + bare produce) | {pub_tp / floor_tp:.2f}× | ≥ 100 000 events/s |

CPU per event in this process (same run): validation {validate_s * us:.1f} µs (part of emit's p50 of
{e50 * us:.1f} µs) and Avro batch encoding {encode_s * us:.1f} µs. The GIL serialises the two, so one process tops
out near **{ceiling:,.0f} events/s** here (1 / (emit p50 + encode)); the publisher reaches
{pub_tp / ceiling:.0%} of that ceiling, delivered and acknowledged.

`emit` only validates and appends to a per-tenant batch; encoding happens once per batch on the publisher's
thread, which is why emit is well under the single-event floor.
{target_note}
"""
    print(body)
    if not args.no_write:
        write_section("Publisher", body)


if __name__ == "__main__":
    main()
