-- unpriced: attempts on models the price catalog does not know (cost 0, so every other report misses them).
-- Reads: rollup_spend_* (its unpriced dimension). The totals beside each row are taken over every group.
SELECT
    *,
    sum(attempts) OVER ()                AS _total_attempts,
    count() OVER ()                      AS _groups
FROM
(
    SELECT
        $dims
        sum(attempts)                        AS attempts,
        sum(input_tokens)                    AS input_tokens,
        sum(cached_input_tokens)             AS cached_input_tokens,
        sum(cache_write_tokens)              AS cache_write_tokens,
        sum(output_tokens)                   AS output_tokens,
        sum(reasoning_tokens)                AS reasoning_tokens,
        sum(unpriced_tokens)                 AS tokens,
        min(first_at)                        AS first_seen,
        max(last_at)                         AS last_seen
    FROM $source
    WHERE $where AND unpriced = 1
    $group_by
)
ORDER BY $order_by
$limit
