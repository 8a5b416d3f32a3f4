-- environments: spend per environment and its share of all spend in the range. Reads: rollup_spend_*.
-- The totals beside each row are taken over every group, before --top.
SELECT
    *,
    sum(cost_nanos) OVER () AS _total_cost_nanos
FROM
(
    SELECT
        $dims
        sum(attempts)                        AS attempts,
        sum(cost_nanos)                      AS cost_nanos
    FROM $source
    WHERE $where
    $group_by
)
ORDER BY $order_by
$limit
