-- spend: what was spent, on how many requests and attempts, and how much of it on failures and unpriced models.
-- Reads: rollup_spend_* (rollup_users_* when grouped by user; raw events for session, request or attr.KEY).
-- The totals beside each row are taken over every group, before --top.
SELECT
    *,
    sum(cost_nanos) OVER () AS _total_cost_nanos,
    sum(failed_cost_nanos) OVER () AS _total_failed_cost_nanos
FROM
(
    SELECT
        $dims
        sum(requests)                  AS requests,
        sum(attempts)                  AS attempts,
        sum(retries)                   AS retries,
        sum(failed_attempts)           AS failed_attempts,
        sum(failed_cost_nanos)         AS failed_cost_nanos,
        sum(unpriced_attempts)         AS unpriced_attempts,
        sum(input_tokens)              AS input_tokens,
        sum(cached_input_tokens)       AS cached_input_tokens,
        sum(cache_write_tokens)        AS cache_write_tokens,
        sum(output_tokens)             AS output_tokens,
        sum(reasoning_tokens)          AS reasoning_tokens,
        sum(cost_nanos)                AS cost_nanos
    FROM $source
    WHERE $where
    $group_by
)
ORDER BY $order_by
$limit
