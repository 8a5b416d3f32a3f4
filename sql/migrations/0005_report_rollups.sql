-- Report rollups, written by the sink from the raw rows it newly inserted (one deduplication token per batch and
-- table, as for the first rollups), read by `costplane report`. Two families, each per minute, hour and day:
--   rollup_spend_*  by tenant, team, feature, model, provider, env, status, service_tier, plan, operation, unpriced
--   rollup_users_*  by tenant, user_id, plan, team, feature, env
-- A report reads whole days from the day table, whole hours at the range's edges from the hour table and whole
-- minutes from the minute table, so any minute-aligned range is exact. Missing dimensions are ''. Measures are
-- integer sums; first_at/last_at are the earliest and latest occurred_at of the rows summed.
-- requests counts first attempts (attempt = 1) and retried_requests second attempts: each request is counted once,
-- in the group and time of its first attempt, and the counts stay summable across buckets.
-- The per-event amounts (input_cost_nanos ... result_cache_avoided_nanos) are computed by the sink when it prices
-- the event (costplane.pricing.ledger) and stored on the raw row too, so rollups rebuilt from raw rows match.

ALTER TABLE $db.usage_events
    ADD COLUMN IF NOT EXISTS input_cost_nanos Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cache_saved_nanos Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS system_prompt_cost_nanos Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS uncached_prefix_tokens UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS uncached_prefix_cost_nanos Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS prefix_cache_saving_nanos Int64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS result_cache_avoided_nanos Int64 DEFAULT 0;

CREATE TABLE IF NOT EXISTS $db.rollup_spend_minute
(
    bucket                     DateTime('UTC'),
    tenant                     LowCardinality(String),
    team                       LowCardinality(String),
    feature                    LowCardinality(String),
    model                      LowCardinality(String),
    provider                   LowCardinality(String),
    env                        LowCardinality(String),
    status                     LowCardinality(String),
    service_tier               LowCardinality(String),
    plan                       LowCardinality(String),
    operation                  LowCardinality(String),
    unpriced                   UInt8,
    requests                   UInt64,
    retried_requests           UInt64,
    attempts                   UInt64,
    retries                    UInt64,
    failed_attempts            UInt64,
    input_tokens               UInt64,
    cached_input_tokens        UInt64,
    cache_write_tokens         UInt64,
    output_tokens              UInt64,
    reasoning_tokens           UInt64,
    failed_tokens              UInt64,
    cost_nanos                 Int64,
    failed_cost_nanos          Int64,
    unpriced_attempts          UInt64,
    unpriced_tokens            UInt64,
    input_cost_nanos           Int64,
    cache_saved_nanos          Int64,
    system_prompt_tokens       UInt64,
    system_prompt_cost_nanos   Int64,
    uncached_prefix_tokens     UInt64,
    uncached_prefix_cost_nanos Int64,
    prefix_cache_saving_nanos  Int64,
    result_cache_hits          UInt64,
    result_cache_avoided_nanos Int64,
    first_at                   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at                    SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, team, feature, model, provider, env, status, service_tier, plan, operation, unpriced)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.rollup_spend_hour
(
    bucket                     DateTime('UTC'),
    tenant                     LowCardinality(String),
    team                       LowCardinality(String),
    feature                    LowCardinality(String),
    model                      LowCardinality(String),
    provider                   LowCardinality(String),
    env                        LowCardinality(String),
    status                     LowCardinality(String),
    service_tier               LowCardinality(String),
    plan                       LowCardinality(String),
    operation                  LowCardinality(String),
    unpriced                   UInt8,
    requests                   UInt64,
    retried_requests           UInt64,
    attempts                   UInt64,
    retries                    UInt64,
    failed_attempts            UInt64,
    input_tokens               UInt64,
    cached_input_tokens        UInt64,
    cache_write_tokens         UInt64,
    output_tokens              UInt64,
    reasoning_tokens           UInt64,
    failed_tokens              UInt64,
    cost_nanos                 Int64,
    failed_cost_nanos          Int64,
    unpriced_attempts          UInt64,
    unpriced_tokens            UInt64,
    input_cost_nanos           Int64,
    cache_saved_nanos          Int64,
    system_prompt_tokens       UInt64,
    system_prompt_cost_nanos   Int64,
    uncached_prefix_tokens     UInt64,
    uncached_prefix_cost_nanos Int64,
    prefix_cache_saving_nanos  Int64,
    result_cache_hits          UInt64,
    result_cache_avoided_nanos Int64,
    first_at                   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at                    SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, team, feature, model, provider, env, status, service_tier, plan, operation, unpriced)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.rollup_spend_day
(
    bucket                     DateTime('UTC'),
    tenant                     LowCardinality(String),
    team                       LowCardinality(String),
    feature                    LowCardinality(String),
    model                      LowCardinality(String),
    provider                   LowCardinality(String),
    env                        LowCardinality(String),
    status                     LowCardinality(String),
    service_tier               LowCardinality(String),
    plan                       LowCardinality(String),
    operation                  LowCardinality(String),
    unpriced                   UInt8,
    requests                   UInt64,
    retried_requests           UInt64,
    attempts                   UInt64,
    retries                    UInt64,
    failed_attempts            UInt64,
    input_tokens               UInt64,
    cached_input_tokens        UInt64,
    cache_write_tokens         UInt64,
    output_tokens              UInt64,
    reasoning_tokens           UInt64,
    failed_tokens              UInt64,
    cost_nanos                 Int64,
    failed_cost_nanos          Int64,
    unpriced_attempts          UInt64,
    unpriced_tokens            UInt64,
    input_cost_nanos           Int64,
    cache_saved_nanos          Int64,
    system_prompt_tokens       UInt64,
    system_prompt_cost_nanos   Int64,
    uncached_prefix_tokens     UInt64,
    uncached_prefix_cost_nanos Int64,
    prefix_cache_saving_nanos  Int64,
    result_cache_hits          UInt64,
    result_cache_avoided_nanos Int64,
    first_at                   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at                    SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = SummingMergeTree
PARTITION BY toYear(bucket)
ORDER BY (tenant, bucket, team, feature, model, provider, env, status, service_tier, plan, operation, unpriced)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.rollup_users_minute
(
    bucket                     DateTime('UTC'),
    tenant                     LowCardinality(String),
    user_id                    String,
    plan                       LowCardinality(String),
    team                       LowCardinality(String),
    feature                    LowCardinality(String),
    env                        LowCardinality(String),
    requests                   UInt64,
    retried_requests           UInt64,
    attempts                   UInt64,
    retries                    UInt64,
    failed_attempts            UInt64,
    input_tokens               UInt64,
    cached_input_tokens        UInt64,
    cache_write_tokens         UInt64,
    output_tokens              UInt64,
    reasoning_tokens           UInt64,
    failed_tokens              UInt64,
    cost_nanos                 Int64,
    failed_cost_nanos          Int64,
    unpriced_attempts          UInt64,
    unpriced_tokens            UInt64,
    input_cost_nanos           Int64,
    cache_saved_nanos          Int64,
    system_prompt_tokens       UInt64,
    system_prompt_cost_nanos   Int64,
    uncached_prefix_tokens     UInt64,
    uncached_prefix_cost_nanos Int64,
    prefix_cache_saving_nanos  Int64,
    result_cache_hits          UInt64,
    result_cache_avoided_nanos Int64,
    first_at                   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at                    SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, user_id, plan, team, feature, env)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.rollup_users_hour
(
    bucket                     DateTime('UTC'),
    tenant                     LowCardinality(String),
    user_id                    String,
    plan                       LowCardinality(String),
    team                       LowCardinality(String),
    feature                    LowCardinality(String),
    env                        LowCardinality(String),
    requests                   UInt64,
    retried_requests           UInt64,
    attempts                   UInt64,
    retries                    UInt64,
    failed_attempts            UInt64,
    input_tokens               UInt64,
    cached_input_tokens        UInt64,
    cache_write_tokens         UInt64,
    output_tokens              UInt64,
    reasoning_tokens           UInt64,
    failed_tokens              UInt64,
    cost_nanos                 Int64,
    failed_cost_nanos          Int64,
    unpriced_attempts          UInt64,
    unpriced_tokens            UInt64,
    input_cost_nanos           Int64,
    cache_saved_nanos          Int64,
    system_prompt_tokens       UInt64,
    system_prompt_cost_nanos   Int64,
    uncached_prefix_tokens     UInt64,
    uncached_prefix_cost_nanos Int64,
    prefix_cache_saving_nanos  Int64,
    result_cache_hits          UInt64,
    result_cache_avoided_nanos Int64,
    first_at                   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at                    SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, user_id, plan, team, feature, env)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS $db.rollup_users_day
(
    bucket                     DateTime('UTC'),
    tenant                     LowCardinality(String),
    user_id                    String,
    plan                       LowCardinality(String),
    team                       LowCardinality(String),
    feature                    LowCardinality(String),
    env                        LowCardinality(String),
    requests                   UInt64,
    retried_requests           UInt64,
    attempts                   UInt64,
    retries                    UInt64,
    failed_attempts            UInt64,
    input_tokens               UInt64,
    cached_input_tokens        UInt64,
    cache_write_tokens         UInt64,
    output_tokens              UInt64,
    reasoning_tokens           UInt64,
    failed_tokens              UInt64,
    cost_nanos                 Int64,
    failed_cost_nanos          Int64,
    unpriced_attempts          UInt64,
    unpriced_tokens            UInt64,
    input_cost_nanos           Int64,
    cache_saved_nanos          Int64,
    system_prompt_tokens       UInt64,
    system_prompt_cost_nanos   Int64,
    uncached_prefix_tokens     UInt64,
    uncached_prefix_cost_nanos Int64,
    prefix_cache_saving_nanos  Int64,
    result_cache_hits          UInt64,
    result_cache_avoided_nanos Int64,
    first_at                   SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at                    SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = SummingMergeTree
PARTITION BY toYear(bucket)
ORDER BY (tenant, bucket, user_id, plan, team, feature, env)
SETTINGS non_replicated_deduplication_window = 10000;
