-- context: the context-window tax. Per group and turn (1..20, then 21+): requests (first attempts), their prompt
-- size (input + cached input + cache write) and output, the cost of every attempt, and history_cost_nanos: the
-- prompt-side cost (input_cost_nanos) of the tokens above the session's first-turn prompt, in proportion, rounded
-- half-even per attempt. A session's baseline is the prompt of its earliest turn's first attempt in the range.
-- Reads: raw events (usage_events), only attempts with a session_id and a turn.
SELECT
    $dims
    if(turn > 20, '21+', toString(turn))         AS _turn,
    min(turn)                                    AS _turn_order,
    countIf(attempt = 1)                         AS requests,
    sumIf(prompt, attempt = 1)                   AS _prompt_sum,
    quantileExactIf(0.9)(prompt, attempt = 1)    AS p90_input_tokens,
    sumIf(output_tokens, attempt = 1)            AS _output_sum,
    sum(cost_nanos)                              AS cost_nanos,
    sum(history_nanos)                           AS history_cost_nanos
FROM
(
    SELECT
        *,
        toInt128(input_cost_nanos) * greatest(toInt128(prompt) - toInt128(base_prompt), 0) AS _units,
        if(prompt = 0, toInt128(0),
           intDiv(_units, prompt)
           + if(2 * (_units % prompt) > prompt OR (2 * (_units % prompt) = prompt AND intDiv(_units, prompt) % 2 = 1),
                1, 0))                           AS history_nanos
    FROM
    (
        SELECT *, input_tokens + cached_input_tokens + cache_write_tokens AS prompt
        FROM $db.usage_events
        WHERE $where AND session_id IS NOT NULL AND turn IS NOT NULL
    ) AS e
    INNER JOIN
    (
        SELECT tenant, session_id,
               argMin(input_tokens + cached_input_tokens + cache_write_tokens, (turn, attempt)) AS base_prompt
        FROM $db.usage_events
        WHERE $where AND session_id IS NOT NULL AND turn IS NOT NULL
        GROUP BY tenant, session_id
    ) AS f USING (tenant, session_id)
)
GROUP BY $keys_then _turn
ORDER BY $order_by, _turn_order
