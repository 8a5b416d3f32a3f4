-- raw_as_rollup: raw events in the shape of a rollup row, for reports whose dimensions no rollup keeps (user with
-- model, session, request, attr.KEY). Each measure is defined exactly as the sink's rollups define it
-- (costplane.streams.sink.processor), so a report reads the same numbers from either source; a test holds them equal.
-- $range and $tenant are filled with bound-parameter conditions only.
SELECT
    occurred_at                                   AS bucket,
    tenant,
    ifNull(team, '')                              AS team,
    ifNull(feature, '')                           AS feature,
    model,
    provider,
    ifNull(env, '')                               AS env,
    status,
    ifNull(service_tier, '')                      AS service_tier,
    ifNull(plan, '')                              AS plan,
    ifNull(operation, '')                         AS operation,
    toUInt8(unpriced)                             AS unpriced,
    ifNull(user_id, '')                           AS user_id,
    ifNull(session_id, '')                        AS session_id,
    request_id,
    attributes,
    toUInt64(attempt = 1)                         AS requests,
    toUInt64(attempt = 2)                         AS retried_requests,
    toUInt64(1)                                   AS attempts,
    toUInt64(attempt > 1)                         AS retries,
    toUInt64(status != 'ok')                      AS failed_attempts,
    input_tokens,
    cached_input_tokens,
    cache_write_tokens,
    output_tokens,
    reasoning_tokens,
    if(status != 'ok', input_tokens + cached_input_tokens + cache_write_tokens + output_tokens + reasoning_tokens, 0)
                                                  AS failed_tokens,
    cost_nanos,
    if(status != 'ok', cost_nanos, 0)             AS failed_cost_nanos,
    toUInt64(unpriced)                            AS unpriced_attempts,
    if(unpriced, input_tokens + cached_input_tokens + cache_write_tokens + output_tokens + reasoning_tokens, 0)
                                                  AS unpriced_tokens,
    input_cost_nanos,
    cache_saved_nanos,
    ifNull(system_prompt_tokens, 0)               AS system_prompt_tokens,
    system_prompt_cost_nanos,
    uncached_prefix_tokens,
    uncached_prefix_cost_nanos,
    prefix_cache_saving_nanos,
    toUInt64(ifNull(result_cache_hit, false))     AS result_cache_hits,
    result_cache_avoided_nanos,
    occurred_at                                   AS first_at,
    occurred_at                                   AS last_at
FROM $db.usage_events
WHERE $range $tenant
