-- users: cost per user, by plan (or any grouping), and each group's share of its tenant's spend in the range.
-- Only attempts with a user_id count toward users and their cost; the tenant's spend counts every attempt.
-- Reads: rollup_users_* (raw events when grouped by a dimension the users rollup lacks, such as model).
SELECT g.*, t._tenant_cost_nanos AS _tenant_cost_nanos
FROM
(
    SELECT
        tenant                                   AS _tenant,
        $dims
        uniqExactIf(user_id, user_id != '')      AS users,
        sumIf(requests, user_id != '')           AS requests,
        sumIf(cost_nanos, user_id != '')         AS cost_nanos
    FROM $source
    WHERE $where
    GROUP BY _tenant $more_group
    HAVING users > 0
    ORDER BY $order_by
    $limit
) AS g
LEFT JOIN
(
    SELECT tenant AS _tenant, sum(cost_nanos) AS _tenant_cost_nanos
    FROM $source
    GROUP BY _tenant
) AS t USING (_tenant)
ORDER BY $outer_order
