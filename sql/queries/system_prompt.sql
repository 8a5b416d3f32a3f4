-- system-prompt: how much of the prompt is the system prompt, and the input cost attributed to it in proportion.
-- Reads: rollup_spend_*.
-- The totals beside each row are taken over every group, before --top.
SELECT
    *,
    sum(system_prompt_cost_nanos) OVER () AS _total_system_prompt_cost_nanos,
    sum(_cost) OVER () AS _total_cost_nanos
FROM
(
    SELECT
        $dims
        sum(system_prompt_tokens)            AS system_prompt_tokens,
        sum(input_tokens) + sum(cached_input_tokens) + sum(cache_write_tokens) AS prompt_tokens,
        sum(system_prompt_cost_nanos)        AS system_prompt_cost_nanos,
        sum(cost_nanos)                      AS _cost
    FROM $source
    WHERE $where
    $group_by
)
ORDER BY $order_by
$limit
