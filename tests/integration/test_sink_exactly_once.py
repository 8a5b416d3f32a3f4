"""Exactly-once totals over at-least-once delivery, against real (embedded) ClickHouse.

A simulated topic of 20 000 priced events (2 % redelivered duplicates) on three partitions is consumed by the
sink with a committed-offset cursor, like a Kafka consumer group. The process "dies" (sink and buffer dropped,
new sink resumes from the committed offsets) at every step of the flush protocol, ClickHouse is made
unavailable once (retried with backoff), and finally the whole topic is replayed from offset 0. Raw events and
every rollup granularity must equal the ground truth by tenant × feature × model, in integer nano-USD.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from costplane.config import ClickHouseSettings
from costplane.publisher.event import UsageEvent
from costplane.streams.core.priced import PricedEvent
from costplane.streams.sink.client import open_client
from costplane.streams.sink.errors import SinkUnavailable
from costplane.streams.sink.migrations import migrate
from costplane.streams.sink.sink import ClickHouseSink, FlushPolicy, retry_with_backoff
from costplane.streams.sink.writer import BatchWriter

pytestmark = pytest.mark.clickhouse

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
Key = tuple[str, str, str]


class SimulatedCrash(Exception):
    """The process died here: nothing after this point of the flush happened."""


def make_topic(
    n: int = 20_000, dup_ratio: float = 0.02, partitions: int = 3, seed: int = 7
) -> dict[int, list[PricedEvent]]:
    rng = random.Random(seed)
    unique: list[PricedEvent] = []
    for i in range(n - int(n * dup_ratio)):
        attempt = rng.choice((1, 1, 1, 2, 3))
        event = UsageEvent(
            event_id=f"0190{i:012d}-{rng.getrandbits(32):08x}",
            occurred_at=T0 + rng.randrange(3 * 86_400_000),
            tenant=rng.choice(("acme", "globex", "initech")),
            provider=rng.choice(("openai", "anthropic")),
            model=rng.choice(("gpt-4o", "gpt-4o-mini", "claude-sonnet")),
            request_id=f"r{i // 2}",
            attempt=attempt,
            status="ok" if attempt == 1 or rng.random() < 0.5 else "rate_limited",
            input_tokens=rng.randrange(5_000),
            cached_input_tokens=rng.randrange(1_000),
            output_tokens=rng.randrange(800),
            reasoning_tokens=rng.randrange(200),
            team=rng.choice(("search", "support", None)),
            feature=rng.choice(("chat", "summarize", "extract", None)),
            user_id=f"u{rng.randrange(200)}",
            env=rng.choice(("prod", "staging")),
            service_tier=rng.choice(("standard", "batch", None)),
            attributes={"k": str(i % 5)},
        )
        unique.append(PricedEvent(event, rng.randrange(1, 5_000_000_000), "v1", unpriced=rng.random() < 0.01))
    stream = list(unique)
    for _ in range(n - len(unique)):  # redeliveries: the same event again, later in the stream
        stream.insert(rng.randrange(len(stream)), rng.choice(unique))
    topic: dict[int, list[PricedEvent]] = defaultdict(list)
    for pe in stream:
        topic[sum(map(ord, pe.event.tenant)) % partitions].append(pe)  # key = tenant
    assert sum(len(v) for v in topic.values()) == n
    return dict(topic)


def ground_truth(topic: dict[int, list[PricedEvent]]) -> dict[Key, tuple[int, int, int]]:
    """(cost_nanos, events, input_tokens) per tenant × feature × model over unique event_ids."""
    unique = {pe.event.event_id: pe for events in topic.values() for pe in events}
    truth: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0])
    for pe in unique.values():
        acc = truth[(pe.event.tenant, pe.event.feature or "", pe.event.model)]
        acc[0] += pe.cost_nanos
        acc[1] += 1
        acc[2] += pe.event.input_tokens
    return {k: (v[0], v[1], v[2]) for k, v in truth.items()}


class Consumer:
    """A minimal consumer-group member: reads from committed offsets, feeds the sink, lets it commit."""

    def __init__(self, topic: dict[int, list[PricedEvent]]) -> None:
        self.topic = topic
        self.committed: dict[int, int] = dict.fromkeys(topic, 0)
        self.commits = 0

    def commit(self, offsets: dict[int, int]) -> None:
        for partition, offset in offsets.items():
            assert offset >= self.committed[partition], "offsets never go backwards"
            self.committed[partition] = offset
        self.commits += 1

    def run(self, sink: ClickHouseSink, chunk: int = 250, on_flush: Callable[[], Any] | None = None) -> None:
        """Poll round-robin in chunks from the committed positions until the topic is drained."""
        position = dict(self.committed)
        while True:
            progressed = False
            for partition, events in self.topic.items():
                batch = events[position[partition] : position[partition] + chunk]
                for i, pe in enumerate(batch):
                    sink.add(pe, partition, position[partition] + i)
                position[partition] += len(batch)
                progressed = progressed or bool(batch)
                if sink.should_flush():
                    (on_flush or sink.flush)()
            if not progressed:
                break
        (on_flush or sink.flush)()


class Faults:
    """Raise at the n-th time a named protocol step completes (counted across restarts)."""

    def __init__(self, plan: dict[tuple[str, int], BaseException]) -> None:
        self.plan = dict(plan)
        self.seen: Counter[str] = Counter()
        self.fired: list[str] = []

    def __call__(self, point: str) -> None:
        self.seen[point] += 1
        exc = self.plan.pop((point, self.seen[point]), None)
        if exc is not None:
            self.fired.append(point)
            raise exc


def _totals(client: Any, database: str, table: str) -> dict[Key, tuple[int, int, int]]:
    """Totals by tenant × feature × model (the users rollups have no model: theirs are keyed with model "*")."""
    events = "count()" if table == "usage_events" else "sum(attempts)"
    feature = "ifNull(feature, '')" if table == "usage_events" else "feature"
    model = "'*'" if table.startswith("rollup_users") else "model"
    rows = client.query(
        f"SELECT tenant, {feature} AS f, {model} AS m, sum(cost_nanos), {events}, sum(input_tokens) "
        f"FROM {database}.{table} GROUP BY tenant, f, m"
    ).result_rows
    return {(str(t), str(f), str(m)): (int(c), int(e), int(i)) for t, f, m, c, e, i in rows}


def _expected(truth: dict[Key, tuple[int, int, int]], table: str) -> dict[Key, tuple[int, int, int]]:
    if not table.startswith("rollup_users"):
        return truth
    merged: dict[Key, tuple[int, int, int]] = {}
    for (tenant, feature, _model), sums in truth.items():
        have = merged.get((tenant, feature, "*"), (0, 0, 0))
        merged[(tenant, feature, "*")] = (have[0] + sums[0], have[1] + sums[1], have[2] + sums[2])
    return merged


TABLES = ("usage_events", *(f"rollup_{family}_{g}" for family in ("spend", "users") for g in ("minute", "hour", "day")))


def test_crash_at_every_step_and_full_replay_change_no_total(clickhouse_settings: ClickHouseSettings) -> None:
    db = clickhouse_settings.database
    client = open_client(clickhouse_settings)
    migrate(client, db)
    topic = make_topic()
    truth = ground_truth(topic)
    consumer = Consumer(topic)
    crash = SimulatedCrash
    faults = Faults(
        {
            ("inserted", 2): crash("after insert, before commit"),
            ("committed", 3): crash("after commit, before mark seen"),
            ("raw", 5): crash("mid-batch: raw rows written, no rollups"),
            ("rollup_spend_minute", 6): crash("mid-batch: one rollup written"),
            ("rollup_users_hour", 7): crash("mid-batch: five rollups written"),
            ("seen", 8): crash("seen marked, journal not closed"),
            ("begin", 9): crash("journal opened, nothing written"),
            ("rollup_spend_day", 4): ConnectionResetError("ClickHouse went away"),
        }
    )
    sleeps: list[float] = []
    restarts = 0
    while True:
        sink = ClickHouseSink(
            BatchWriter(client, db, fault=faults),
            consumer.commit,
            FlushPolicy(max_events=1_500, max_age_s=1e9),
            fault=faults,
        )
        try:
            consumer.run(sink, on_flush=lambda s=sink: retry_with_backoff(s.flush, sleep=sleeps.append))
            break
        except SimulatedCrash:
            restarts += 1  # the process is gone with its buffer; a new one resumes from committed offsets
    assert faults.plan == {}, f"faults not reached: {faults.plan}"
    assert restarts == 7 and len(sleeps) == 1
    assert consumer.committed == {p: len(v) for p, v in topic.items()}
    for table in TABLES:
        assert _totals(client, db, table) == _expected(truth, table), table

    # Replay the whole topic from the beginning with a fresh process: nothing may change.
    replay = Consumer(topic)
    sink = ClickHouseSink(BatchWriter(client, db), replay.commit, FlushPolicy(max_events=4_000, max_age_s=1e9))
    replay.run(sink)
    for table in TABLES:
        assert _totals(client, db, table) == _expected(truth, table), f"{table} after replay"
    raw_rows, distinct_ids = client.query(f"SELECT count(), uniqExact(event_id) FROM {db}.usage_events").result_rows[0]
    assert raw_rows == distinct_ids == len({pe.event.event_id for v in topic.values() for pe in v})
    open_batches = client.query(
        f"SELECT count() FROM (SELECT sink_batch_id FROM {db}.sink_batches GROUP BY sink_batch_id "
        "HAVING countIf(stage = 'done') = 0)"
    ).result_rows[0][0]
    assert open_batches == 0


def test_flush_against_unreachable_clickhouse_is_retryable(clickhouse_settings: ClickHouseSettings) -> None:
    client = open_client(clickhouse_settings)
    migrate(client, clickhouse_settings.database)
    # A database that does not exist behaves like a server refusing every statement.
    sink = ClickHouseSink(BatchWriter(client, "no_such_db"), lambda offsets: None)
    pe = make_topic(n=10, dup_ratio=0.0, partitions=1)[0][0]
    sink.add(pe, 0, 0)
    with pytest.raises(SinkUnavailable):
        sink.flush()
    assert len(sink) == 1


def test_identical_rollup_blocks_from_different_batches_both_count(clickhouse_settings: ClickHouseSettings) -> None:
    """Rollup tables keep a dedup window for recovery; distinct batches must never be mistaken for a retry."""
    db = clickhouse_settings.database
    client = open_client(clickhouse_settings)
    migrate(client, db)
    sink = ClickHouseSink(BatchWriter(client, db), lambda offsets: None)
    for offset, event_id in enumerate(("e-1", "e-2", "e-3")):
        event = UsageEvent(event_id, T0, "acme", "openai", "gpt-4o", "r", 1, "ok", input_tokens=10)
        sink.add(PricedEvent(event, 42, "v1"), 0, offset)
        sink.flush()  # three batches whose rollup rows are byte-for-byte identical
    for table in TABLES:
        model = "*" if table.startswith("rollup_users") else "gpt-4o"
        assert _totals(client, db, table) == {("acme", "", model): (126, 3, 30)}, table


def test_open_sink_owns_migrates_writes_and_reports(clickhouse_settings: ClickHouseSettings) -> None:
    from costplane.streams.sink.ownership import current_owner
    from costplane.streams.sink.runtime import open_sink

    commits: list[dict[int, int]] = []
    opened = open_sink(clickhouse_settings, commits.append, api_url="http://127.0.0.1:6066")
    try:
        assert opened.lock is not None and (clickhouse_settings.chdb_path / "costplane-owner.json").exists()
        assert current_owner(clickhouse_settings.chdb_path) is None  # this process is the owner
        event = UsageEvent("e-1", T0, "acme", "openai", "gpt-4o", "r", 1, "ok", input_tokens=10)
        opened.sink.add(PricedEvent(event, 5, "v1"), 2, 9)
        opened.sink.flush()
        assert commits == [{2: 10}]
        answer = opened.report("report=spend&by=tenant&since=2025-12-01")  # T0 is in January 2026
        rows = answer["rows"]
        assert rows[0]["tenant"] == "acme" and rows[0]["cost_nanos"] == 5 and rows[0]["cost_usd"] == "0.000000005"
    finally:
        opened.close()
    assert not (clickhouse_settings.chdb_path / "costplane-owner.json").exists()


def test_shared_sinks_recover_only_batches_of_partitions_they_take_over(
    clickhouse_settings: ClickHouseSettings,
) -> None:
    """Two sinks on one database (a server): B never finishes A's open batch until it owns A's partition."""
    db = clickhouse_settings.database
    client = open_client(clickhouse_settings)
    migrate(client, db)
    topic = make_topic(n=6_000, dup_ratio=0.02, partitions=2, seed=11)
    truth = ground_truth(topic)
    consumer = Consumer(topic)
    policy = FlushPolicy(max_events=700, max_age_s=1e9)
    faults = Faults({("inserted", 2): SimulatedCrash("A dies after insert, before commit")})
    sink_a = ClickHouseSink(BatchWriter(client, db), consumer.commit, policy, fault=faults, shared=True)
    part0 = Consumer({0: topic[0]})
    part0.committed = consumer.committed  # one group, one committed-offset map
    part0.commit = consumer.commit  # type: ignore[method-assign]
    with pytest.raises(SimulatedCrash):
        part0.run(sink_a)
    open_before = BatchWriter(client, db).pending_batches()
    assert len(open_before) == 1

    # B works on partition 1 meanwhile: A's batch (partition 0) stays open — it might still be in flight.
    sink_b = ClickHouseSink(BatchWriter(client, db), consumer.commit, policy, shared=True)
    part1 = Consumer({1: topic[1]})
    part1.committed = consumer.committed
    part1.commit = consumer.commit  # type: ignore[method-assign]
    part1.run(sink_b)
    assert BatchWriter(client, db).pending_batches() == open_before

    # Rebalance: A is gone, B takes partition 0 from the committed offset and finishes A's batch first.
    part0.run(sink_b)
    assert BatchWriter(client, db).pending_batches() == []
    assert consumer.committed == {p: len(v) for p, v in topic.items()}
    for table in TABLES:
        assert _totals(client, db, table) == _expected(truth, table), table


def test_seen_lookup_finds_plain_and_quoted_event_ids(clickhouse_settings: ClickHouseSettings) -> None:
    """Plain ids are looked up as a literal, anything else through parameter binding: both must find them."""
    db = clickhouse_settings.database
    client = open_client(clickhouse_settings)
    migrate(client, db)
    writer = BatchWriter(client, db)
    sink = ClickHouseSink(writer, lambda offsets: None)
    ids = ["0b9f6a1e-5f7c-4d47-9a39-8f1e2c3d4e5f", "o'brien\\x", "plain_id-2"]
    for offset, event_id in enumerate(ids):
        event = UsageEvent(event_id, T0, "acme", "openai", "gpt-4o", "r", 1, "ok", input_tokens=10)
        sink.add(PricedEvent(event, 42, "v1"), 0, offset)
    sink.flush()
    assert writer.already_written([ids[0], ids[2], "never-seen"]) == {ids[0], ids[2]}  # the literal path
    assert writer.already_written([ids[1], ids[0], "never-seen"]) == {ids[0], ids[1]}  # the binding path
