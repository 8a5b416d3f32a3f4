"""Worker benchmark: throughput of one worker process (all roles) beside a same-run floor, and decision latency.

* Floor: a bare aiokafka consumer reading the same batched messages and decoding them with the same codec,
  nothing else (no Faust, no pricing, no windows, no Redis, no ClickHouse).
* Worker: ``costplane worker --role all`` (real pricing, a per-user budget on every event so every event updates a
  window, Redis effects, the ClickHouse sink on embedded chDB) consuming the same messages from a fresh group;
  throughput = events / (time the stream role counted the last one − time it counted the first).
* Decision latency: paced traffic at a target rate where some events are the first of a user with a 1-token budget
  (so each such event must yield a Redis decision); latency = the decision key's appearance − the produce time.

Run with the dev stack up: ``python -m bench.bench_worker [--events N] [--rate R] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
from confluent_kafka import Producer

from bench.common import clean_up_on_sigterm, drop_redis_prefix, drop_topics, percentile, write_section
from costplane.budgets import Budget
from costplane.config import ClickHouseSettings, KafkaSettings, RedisSettings, WorkerSettings, load_settings
from costplane.publisher.codec import UsageCodec
from costplane.publisher.event import UsageEvent
from costplane.streams.topics import create_topics
from costplane.streams.worker.testing import WorkerProcess, worker_env

BATCH = 50


def event(tenant: str, user: str, now_ms: int, i: int) -> UsageEvent:
    return UsageEvent(
        event_id=str(uuid.uuid4()),
        occurred_at=now_ms,
        tenant=tenant,
        provider="openai",
        model="gpt-4o-mini",
        request_id=f"r{i}",
        attempt=1,
        status="ok",
        input_tokens=1200,
        cached_input_tokens=300,
        output_tokens=250,
        feature="chat",
        user_id=user,
        env="prod",
    )


def produce_batches(kafka: KafkaSettings, n: int, users: int) -> None:
    codec = UsageCodec.schemaless()
    producer = Producer({**kafka.confluent_config(), "linger.ms": 20, "compression.type": "lz4"})
    rng = random.Random(1)
    now = int(time.time() * 1000)
    tenants = [f"t{i}" for i in range(12)]
    for start in range(0, n, BATCH):
        tenant = tenants[(start // BATCH) % len(tenants)]
        evs = [event(tenant, f"u{rng.randrange(users)}", now, start + j) for j in range(BATCH)]
        value, headers = codec.encode_batch(tenant, evs)
        producer.produce(kafka.topic("usage"), key=tenant.encode(), value=value, headers=headers)
        producer.poll(0)
    producer.flush(60)


async def floor(kafka: KafkaSettings, n: int) -> float:
    """Bare aiokafka consume + decode of the same messages: events/s."""
    from aiokafka import AIOKafkaConsumer

    codec = UsageCodec.schemaless()
    consumer = AIOKafkaConsumer(
        kafka.topic("usage"),
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"floor-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    started: float | None = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batch.values():
                for rec in records:
                    if started is None:
                        started = time.perf_counter()
                    seen += len(codec.decode(rec.value, list(rec.headers)).events)
    finally:
        await consumer.stop()
    assert started is not None
    return n / (time.perf_counter() - started)


def faust_floor(kafka: KafkaSettings, redis_settings: RedisSettings, n: int, worker: dict[str, str]) -> float:
    """A Faust app that only takes and decodes the same messages (``bench/faust_floor.py``): events/s. It gets
    the worker's environment, so its batch settings are the worker's."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "faust-floor.json"
        subprocess.run(
            [sys.executable, "-m", "bench.faust_floor", kafka.topic("usage"), str(n), str(result)],
            check=True,
            timeout=600,
            stdout=subprocess.DEVNULL,
            env=worker_env(kafka, redis_settings, None, **worker),
        )
        return float(json.loads(result.read_text())["events_per_s"])


def metric(worker: WorkerProcess, name: str) -> float:
    try:
        _, body = worker.get("/metrics", 30)
    except OSError:
        return -1.0  # busy beyond 30 s: the caller polls again
    for line in str(body).splitlines():
        if line.startswith((name + '{role="stream"}', name + " ")):
            return float(line.split()[-1])
    return 0.0


def cpu_seconds(proc: WorkerProcess) -> float:
    """User + system CPU time the worker process has used so far (all its threads), from /proc."""
    assert proc.proc is not None
    fields = Path(f"/proc/{proc.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Throughput:
    events_per_s: float
    sink_caught_up_s: float
    stream_cpu_us: float  # CPU per event of the stream process while it counted
    sink_cpu_us: float  # of the sink process over the same stretch (split only)


def worker_throughput(worker: WorkerProcess, sink: WorkerProcess, n: int) -> Throughput:
    """Stream events/s, when the sink had written everything, and each process's CPU per event meanwhile."""
    first_at: float | None = None
    first_count = 0.0
    cpu0 = (0.0, 0.0)
    count = 0.0
    deadline = time.monotonic() + 600
    while count < n and time.monotonic() < deadline:
        count = max(count, metric(worker, "costplane_worker_events_total"))
        if count > 0 and first_at is None:
            first_at, first_count, cpu0 = time.monotonic(), count, (cpu_seconds(worker), cpu_seconds(sink))
        time.sleep(0.05)
    done_at = time.monotonic()
    cpu1 = (cpu_seconds(worker), cpu_seconds(sink))
    assert first_at is not None and count >= n, f"worker counted {count} of {n}"
    while metric(sink, "costplane_worker_sink_rows_total") < n and time.monotonic() < deadline:
        time.sleep(0.2)
    counted = max(count - first_count, 1.0)
    # The first poll that sees events is up to 50 ms late: the events counted by then are not timed.
    return Throughput(
        counted / max(done_at - first_at, 1e-6),
        time.monotonic() - first_at,
        (cpu1[0] - cpu0[0]) / counted * 1e6,
        (cpu1[1] - cpu0[1]) / counted * 1e6,
    )


def decision_latency(
    kafka: KafkaSettings, redis_settings: RedisSettings, rate: int, seconds: float, tag: str = ""
) -> list[float]:
    """Paced traffic at ``rate`` events/s; every 20th message opens a new user whose first event crosses
    (``tag`` keeps each phase's probe users new)."""
    codec = UsageCodec.schemaless()
    producer = Producer({**kafka.confluent_config(), "linger.ms": 5, "compression.type": "lz4"})
    r = redis.Redis.from_url(redis_settings.url.get_secret_value())
    pending: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() or pending:
            with lock:
                keys = list(pending)
            if keys:
                values = r.mget(keys)
                now = time.perf_counter()
                with lock:
                    for key, value in zip(keys, values, strict=True):
                        if value is not None:
                            latencies.append(now - pending.pop(key))
            time.sleep(0.002)
            if stop.is_set() and time.perf_counter() - stop_at[0] > 10:
                break

    stop_at = [0.0]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    interval = BATCH / rate
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        tenant = f"lat{i % 6}"
        now_ms = int(time.time() * 1000)
        evs = [event(tenant, f"steady{j % 40}", now_ms, i * BATCH + j) for j in range(BATCH - 1)]
        probe = None
        if i % 20 == 0:
            probe = f"probe{tag}{i}"
            evs.append(event(tenant, probe, now_ms, i * BATCH + BATCH))
        else:
            evs.append(event(tenant, "steady0", now_ms, i * BATCH + BATCH))
        value, headers = codec.encode_batch(tenant, evs)
        producer.produce(kafka.topic("usage"), key=tenant.encode(), value=value, headers=headers)
        producer.poll(0)
        if probe is not None:
            key = f"{redis_settings.key_prefix}:{{{tenant}}}:decision:probe-tokens:tenant={tenant},user={probe}"
            with lock:
                pending[key] = time.perf_counter()
        i += 1
        next_at = start + i * interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    producer.flush(10)
    stop_at[0] = time.perf_counter()
    stop.set()
    watcher.join(15)
    missing = len(pending)
    assert missing == 0, f"{missing} of {missing + len(latencies)} probes got no decision: {sorted(pending)[:3]}"
    return sorted(latencies)


def latency_rows(phases: list[tuple[int, list[float]]]) -> str:
    """Two table rows per latency phase; the ≤ 1 s p99 target is stated at 5 000 events/s."""
    rows = []
    for rate, latencies in phases:
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
        target = (
            ("≤ 1 000 ms" + (" (met)" if p99 <= 1000 else " (not met)"))
            if rate == 5_000
            else "— (the target is at 5 000 events/s)"
        )
        rows.append(f"| event → Redis decision p50 at {rate:,} events/s | {p50:.0f} ms | — | — | — |")
        rows.append(
            f"| event → Redis decision p99 at {rate:,} events/s | {p99:.0f} ms ({len(latencies)} probes) "
            f"| — | — | {target} |"
        )
    return "\n".join(rows)


def main() -> None:
    clean_up_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument(
        "--rate",
        default="10000",
        help="offered events/s of the latency phase; several comma-separated run one after another",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a worker setting for the worker processes (COSTPLANE_WORKER_NAME), e.g. "
        "batch_max_messages=40; repeatable",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="stream role and sink role in two processes (throughput is the stream process's)",
    )
    args = parser.parse_args()

    kafka = load_settings(KafkaSettings, topic_prefix=f"bench{uuid.uuid4().hex[:6]}")
    redis_settings = load_settings(RedisSettings, key_prefix=f"bench{uuid.uuid4().hex[:6]}")
    create_topics(kafka, load_settings(WorkerSettings))
    budgets = [
        Budget(id="user-day", scope={"tenant": "*", "user": "*"}, unit="tokens", limit=10**12, version=1),
        Budget(
            id="probe-tokens", scope={"tenant": "*", "user": "*"}, unit="tokens", limit=1, version=1, action="block"
        ),
    ]
    producer = Producer(kafka.confluent_config())
    for b in budgets[:1]:
        producer.produce(kafka.topic("budgets"), key=b.id.encode(), value=b.to_json().encode())
    producer.flush(10)
    produce_batches(kafka, args.events, args.users)
    floor_rate = asyncio.run(floor(kafka, args.events))
    overrides = dict(item.split("=", 1) for item in args.worker)
    faust_rate = faust_floor(kafka, redis_settings, args.events, overrides)

    with tempfile.TemporaryDirectory() as tmp:
        ch = load_settings(ClickHouseSettings, chdb_path=Path(tmp) / "chdb", database="bench")
        env = worker_env(kafka, redis_settings, ch, **overrides)
        log = Path(os.environ.get("BENCH_WORKER_LOG", Path(tmp) / "worker.log"))
        worker = WorkerProcess(env, log, role="stream" if args.split else "all").start()
        sink = WorkerProcess(env, log.with_suffix(".sink"), role="sink").start() if args.split else worker
        try:
            worker.wait_ready(120)
            sink.wait_ready(120)
            measured = worker_throughput(worker, sink, args.events)
            rate, sink_s = measured.events_per_s, measured.sink_caught_up_s
            print(
                f"throughput: {rate:,.0f} events/s (floor {floor_rate:,.0f}, Faust alone {faust_rate:,.0f}); "
                f"sink caught up after {sink_s:.1f} s; "
                f"CPU per event: stream {measured.stream_cpu_us:.0f} µs, sink {measured.sink_cpu_us:.0f} µs",
                flush=True,
            )
            # Latency phase: the probe budget blocks each probe user at its first event.
            producer.produce(kafka.topic("budgets"), key=b"probe-tokens", value=budgets[1].to_json().encode())
            producer.flush(10)
            phases: list[tuple[int, list[float]]] = []
            for n, offered in enumerate(int(r) for r in str(args.rate).split(",")):
                time.sleep(5)  # the previous phase's backlog drains first
                phases.append((offered, decision_latency(kafka, redis_settings, offered, args.seconds, tag=f"r{n}-")))
        finally:
            worker.stop()
            sink.stop()
            drop_redis_prefix(redis_settings.url.get_secret_value(), redis_settings.key_prefix)
            drop_topics(kafka)

    split_flag = (" --split" if args.split else "") + "".join(f" --worker {w}" for w in args.worker)
    layout = (
        "A stream-role process beside a separate sink process (`--role stream` + `--role sink`)"
        if args.split
        else "One worker process, `--role all`"
    )
    cpu_row = (
        f"stream process {measured.stream_cpu_us:.0f} µs, sink process {measured.sink_cpu_us:.0f} µs"
        if args.split
        else f"{measured.stream_cpu_us:.0f} µs (all roles, one process)"
    )
    throughput_verdict = "met" if rate >= 10_000 else "not met"
    throughput_of = "the stream process" if args.split else "one process"
    body = f"""
Command: `python -m bench.bench_worker --events {args.events} --rate {args.rate} --seconds {args.seconds:g}{split_flag}`
(dev stack running). {layout}: real pricing, a per-user budget on every event, Redis effects per batch, the
ClickHouse sink on embedded chDB; {BATCH} events per message, {args.users} users.

| figure | worker | floor (same run) | ratio | target |
|---|---|---|---|---|
| throughput, {throughput_of} | {rate:,.0f} events/s | {floor_rate:,.0f} events/s (bare consume + decode) \
| {rate / floor_rate:.2f}× | ≥ 10 000 events/s |
| … against Faust alone | | {faust_rate:,.0f} events/s (a Faust agent that only takes and decodes) \
| {rate / faust_rate:.2f}× | — |
| sink caught up | {sink_s:.1f} s after the first event | — | — | — |
| CPU per event meanwhile | {cpu_row} | — | — | — |
{latency_rows(phases)}

Targets are checked against the table above, not assumed: the stream process's throughput (≥ 10 000 events/s with
a per-user budget on every event) is **{throughput_verdict}**, and the decision latency is judged on the
5 000 events/s row. Faust alone, taking and decoding the same messages with nothing after the decode, reaches \
{faust_rate:,.0f} events/s here ({faust_rate / floor_rate:.2f}× the bare floor). With {args.users:,} users nearly
every event is its own window key, so most of a stream-role event's CPU goes to applying, formatting and framing
window states into the tenant's Lua call; Redis runs one tenant's call while the next tenant's is computed. The
sink process re-decodes and re-prices every event, builds raw and
rollup rows (per-user rollups: about one rollup row per event and granularity) and inserts them; it runs at a
lower CPU priority (`COSTPLANE_WORKER_SINK_NICE`), so on these two shared cores decisions keep their latency
while the sink lags and catches up. A decision is one batch (≤ `COSTPLANE_WORKER_BATCH_WITHIN_S`) plus one
pipeline away once the worker keeps up; above its throughput the latency is queueing.
"""
    print(body)
    write_section("Worker" + (" (stream and sink split)" if args.split else ""), body)


if __name__ == "__main__":
    main()
