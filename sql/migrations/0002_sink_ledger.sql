-- The sink's durable dedup state.
-- seen_event_ids: every event_id the sink has written, sorted by event_id so the per-flush "already written?"
-- lookup is an index range scan. It has no TTL: raw rows may expire, a replay must still be recognised.
-- Inserts carry a deduplication token (batch id), so re-marking a batch during recovery is a no-op.
CREATE TABLE IF NOT EXISTS $db.seen_event_ids
(
    event_id        String,
    tenant          LowCardinality(String),
    kafka_partition Int32,
    kafka_offset    Int64,
    sink_batch_id   String,
    marked_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY event_id
SETTINGS non_replicated_deduplication_window = 10000;

-- sink_batches: the flush journal. A 'begin' row is written before a batch touches any table, a 'done' row
-- after it is marked seen. A batch with 'begin' and no 'done' was interrupted and is rolled forward on restart.
CREATE TABLE IF NOT EXISTS $db.sink_batches
(
    sink_batch_id String,
    stage         LowCardinality(String),
    events        UInt64,
    at            DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (sink_batch_id, stage)
TTL toDateTime(at) + INTERVAL 90 DAY;
