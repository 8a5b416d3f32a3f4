-- history_rows: raw events in the range with their prompt size and the cost of the history they re-sent
-- (_history): the prompt-side cost (input_cost_nanos) of the tokens above the session's baseline, in proportion to
-- the prompt, rounded half-even per attempt. A session's baseline is the prompt of its earliest turn's first attempt
-- in the range; attempts without a session or a turn re-send no history. Used by the context and leaks reports.
SELECT
    e.*,
    if(e.session_id IS NULL OR e.turn IS NULL, e.prompt, f.base_prompt) AS _base_prompt,
    toInt128(e.input_cost_nanos) * greatest(toInt128(e.prompt) - toInt128(_base_prompt), 0) AS _hist_units,
    if(e.prompt = 0, toInt128(0),
       intDiv(_hist_units, e.prompt)
       + if(2 * (_hist_units % e.prompt) > e.prompt
            OR (2 * (_hist_units % e.prompt) = e.prompt AND intDiv(_hist_units, e.prompt) % 2 = 1), 1, 0)) AS _history
FROM
(
    SELECT *, $dims input_tokens + cached_input_tokens + cache_write_tokens AS prompt
    FROM $db.usage_events
    WHERE $where
) AS e
LEFT JOIN
(
    SELECT tenant, session_id,
           argMin(input_tokens + cached_input_tokens + cache_write_tokens, (turn, attempt)) AS base_prompt
    FROM $db.usage_events
    WHERE $where AND session_id IS NOT NULL AND turn IS NOT NULL
    GROUP BY tenant, session_id
) AS f ON e.tenant = f.tenant AND e.session_id = f.session_id
