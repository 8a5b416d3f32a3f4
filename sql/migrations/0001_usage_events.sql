-- Raw usage events: one row per priced attempt, every UsageEvent field plus its cost.
-- Tenant leads the sort key (every query is tenant-scoped), partitions are monthly by occurred_at so TTL and
-- drops work per month. ReplacingMergeTree on the sort key (which contains event_id) is only a safety net: the
-- sink never inserts an event_id twice, and no report relies on merges having happened.
-- The sink_batch_id column ties every row to the flush that wrote it (crash recovery reads a batch back).
CREATE TABLE IF NOT EXISTS $db.usage_events
(
    event_id             String,
    occurred_at          DateTime64(3, 'UTC'),
    tenant               LowCardinality(String),
    provider             LowCardinality(String),
    model                LowCardinality(String),
    request_id           String,
    attempt              UInt32,
    status               LowCardinality(String),
    input_tokens         UInt64,
    cached_input_tokens  UInt64,
    cache_write_tokens   UInt64,
    output_tokens        UInt64,
    reasoning_tokens     UInt64,
    operation            LowCardinality(Nullable(String)),
    service_tier         LowCardinality(Nullable(String)),
    user_id              Nullable(String),
    team                 LowCardinality(Nullable(String)),
    feature              LowCardinality(Nullable(String)),
    env                  LowCardinality(Nullable(String)),
    session_id           Nullable(String),
    turn                 Nullable(UInt32),
    plan                 LowCardinality(Nullable(String)),
    system_prompt_tokens Nullable(UInt64),
    max_tokens           Nullable(UInt64),
    latency_ms           Nullable(UInt64),
    tokens_estimated     Nullable(Bool),
    result_cache_hit     Nullable(Bool),
    content_hash         Nullable(String),
    billed_cost_nanos    Nullable(Int64),
    attributes           Map(String, String),
    cost_nanos           Int64,
    price_version        LowCardinality(String),
    unpriced             Bool,
    ingested_at          DateTime64(3, 'UTC'),
    sink_batch_id        String,
    kafka_partition      Int32,
    kafka_offset         Int64,
    INDEX idx_sink_batch sink_batch_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant, toDate(occurred_at), event_id);
