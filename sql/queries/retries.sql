-- retries: how many requests needed another attempt, and what the failed attempts cost (status != ok).
-- Reads: rollup_spend_*.
-- The totals beside each row are taken over every group, before --top.
SELECT
    *,
    sum(_cost) OVER () AS _total_cost_nanos,
    sum(wasted_cost_nanos) OVER () AS _total_wasted_cost_nanos
FROM
(
    SELECT
        $dims
        sum(requests)                        AS requests,
        sum(retried_requests)                AS retried_requests,
        sum(failed_attempts)                 AS failed_attempts,
        sum(failed_tokens)                   AS wasted_tokens,
        sum(failed_cost_nanos)               AS wasted_cost_nanos,
        sum(cost_nanos)                      AS _cost
    FROM $source
    WHERE $where
    $group_by
)
ORDER BY $order_by
$limit
