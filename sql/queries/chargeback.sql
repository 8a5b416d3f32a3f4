-- chargeback: spend per group (team by default) for showback or chargeback; untagged spend is its own group.
-- Reads: rollup_spend_* (rollup_users_* when grouped by user).
-- The totals beside each row are taken over every group, before --top.
SELECT
    *,
    sum(cost_nanos) OVER () AS _total_cost_nanos
FROM
(
    SELECT
        $dims
        sum(cost_nanos)                      AS cost_nanos
    FROM $source
    WHERE $where
    $group_by
)
ORDER BY $order_by
