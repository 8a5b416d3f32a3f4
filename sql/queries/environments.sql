-- environments: spend per environment and its share of all spend in the range; non-production spend is every
-- environment that is set and not in --production. Reads: rollup_spend_*.
-- The totals beside each row are taken over every group, before --top.
SELECT
    *,
    _cost                                AS cost_nanos,
    sum(_cost) OVER ()                   AS _total_cost_nanos,
    sum(_nonprod) OVER ()                AS _total_nonprod_nanos,
    groupUniqArrayArray(_nonprod_envs) OVER () AS _all_nonprod_envs
FROM
(
    SELECT
        $dims
        sum(attempts)                        AS attempts,
        sum(cost_nanos)                      AS _cost,
        sumIf(cost_nanos, env != '' AND env NOT IN {production:Array(String)}) AS _nonprod,
        groupUniqArrayIf(env, env != '' AND env NOT IN {production:Array(String)}) AS _nonprod_envs
    FROM $source
    WHERE $where
    $group_by
)
ORDER BY $order_by
$limit
