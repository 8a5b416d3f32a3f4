-- history_rows: raw events in the range with their prompt size and the cost of the history they re-sent
-- (_history): the prompt-side cost (input_cost_nanos) of the tokens above the session's baseline, in proportion to
-- the prompt, rounded half-even per attempt. A session's baseline is the prompt of its earliest turn's first attempt
-- in the range; attempts without a session or a turn re-send no history. Used by the context and leaks reports.
-- Only the columns those reports read are selected, and the baseline is a window over one text key per session
-- (the tenant's length, the tenant, the session id): one pass, no self-join; (turn, attempt) is ordered as one
-- integer, turn × 2^32 + attempt (both are 32-bit).
SELECT
    *,
    if(_session_key = '', prompt,
       argMin(prompt, toUInt64(turn) * 4294967296 + attempt) OVER (PARTITION BY _session_key)) AS _base_prompt,
    toInt128(input_cost_nanos) * greatest(toInt128(prompt) - toInt128(_base_prompt), 0) AS _hist_units,
    if(prompt = 0, toInt128(0),
       intDiv(_hist_units, prompt)
       + if(2 * (_hist_units % prompt) > prompt
            OR (2 * (_hist_units % prompt) = prompt AND intDiv(_hist_units, prompt) % 2 = 1), 1, 0)) AS _history
FROM
(
    SELECT
        $dims
        event_id, occurred_at, tenant, provider, model, request_id, attempt, status, input_tokens,
        cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, operation, service_tier,
        feature, env, session_id, turn, content_hash, cost_nanos, unpriced, input_cost_nanos,
        prefix_cache_saving_nanos,
        input_tokens + cached_input_tokens + cache_write_tokens AS prompt,
        if(session_id IS NULL OR turn IS NULL, '', concat(toString(length(tenant)), ':', tenant, session_id))
            AS _session_key
    FROM $db.usage_events
    WHERE $where
)
