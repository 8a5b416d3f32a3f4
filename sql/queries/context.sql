-- context: the context-window tax. Per group and turn (1..20, then 21+): requests (first attempts), their prompt
-- size (input + cached input + cache write) and output, the cost of every attempt, and history_cost_nanos: what
-- re-sent history cost (history_rows.sql). Reads: raw events (usage_events), only attempts with a session and a turn.
SELECT
    $outer_dims
    if(turn > 20, '21+', toString(turn))         AS _turn,
    min(turn)                                    AS _turn_order,
    countIf(attempt = 1)                         AS requests,
    sumIf(prompt, attempt = 1)                   AS _prompt_sum,
    quantileExactIf(0.9)(prompt, attempt = 1)    AS p90_input_tokens,
    sumIf(output_tokens, attempt = 1)            AS _output_sum,
    sum(cost_nanos)                              AS cost_nanos,
    sum(_history)                                AS history_cost_nanos
FROM
(
    $session_history_rows
)
GROUP BY $keys_then _turn
ORDER BY $order_by, _turn_order
