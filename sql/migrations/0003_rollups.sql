-- Rollups per minute, hour and day, written by the sink from the rows it newly inserted (never from a
-- materialized view), each insert carrying the batch id as deduplication token so a recovered batch cannot
-- count twice. Missing dimensions are stored as the empty string (sort keys cannot be Nullable).
-- events counts attempts (one event = one attempt); retries are attempts > 1; failed = status != ok.

CREATE TABLE IF NOT EXISTS $db.usage_rollup_minute
(
    bucket              DateTime('UTC'),
    tenant              LowCardinality(String),
    team                LowCardinality(String),
    feature             LowCardinality(String),
    user_id             String,
    model               LowCardinality(String),
    provider            LowCardinality(String),
    env                 LowCardinality(String),
    status              LowCardinality(String),
    service_tier        LowCardinality(String),
    events              UInt64,
    retries             UInt64,
    failed_attempts     UInt64,
    input_tokens        UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens  UInt64,
    output_tokens       UInt64,
    reasoning_tokens    UInt64,
    cost_nanos          Int64,
    failed_cost_nanos   Int64,
    unpriced_events     UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, team, feature, model, provider, env, status, service_tier, user_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.usage_rollup_hour
(
    bucket              DateTime('UTC'),
    tenant              LowCardinality(String),
    team                LowCardinality(String),
    feature             LowCardinality(String),
    user_id             String,
    model               LowCardinality(String),
    provider            LowCardinality(String),
    env                 LowCardinality(String),
    status              LowCardinality(String),
    service_tier        LowCardinality(String),
    events              UInt64,
    retries             UInt64,
    failed_attempts     UInt64,
    input_tokens        UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens  UInt64,
    output_tokens       UInt64,
    reasoning_tokens    UInt64,
    cost_nanos          Int64,
    failed_cost_nanos   Int64,
    unpriced_events     UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, team, feature, model, provider, env, status, service_tier, user_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.usage_rollup_day
(
    bucket              DateTime('UTC'),
    tenant              LowCardinality(String),
    team                LowCardinality(String),
    feature             LowCardinality(String),
    user_id             String,
    model               LowCardinality(String),
    provider            LowCardinality(String),
    env                 LowCardinality(String),
    status              LowCardinality(String),
    service_tier        LowCardinality(String),
    events              UInt64,
    retries             UInt64,
    failed_attempts     UInt64,
    input_tokens        UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens  UInt64,
    output_tokens       UInt64,
    reasoning_tokens    UInt64,
    cost_nanos          Int64,
    failed_cost_nanos   Int64,
    unpriced_events     UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYear(bucket)
ORDER BY (tenant, bucket, team, feature, model, provider, env, status, service_tier, user_id)
SETTINGS non_replicated_deduplication_window = 10000;

