-- batch: background work billed at the standard or priority tier, and what the batch tier would have cost (the
-- same calls re-priced per call at the batch tier; a missing batch price is half the standard one). Background:
-- a feature configured as background, or a call without a session that is an embedding or runs in a batch
-- environment. Unpriced calls are left out. Reads: raw events.
SELECT
    *,
    sum(cost_nanos) OVER ()                      AS _total_cost_nanos,
    sum(if(_not_repriced = 0, cost_nanos - _batch_sum, 0)) OVER () AS _total_saving_nanos
FROM
(
SELECT
    $outer_dims
    count()                                      AS calls,
    sum(cost_nanos)                              AS cost_nanos,
    sum(_batch)                                  AS _batch_sum,
    countIf(_batch IS NULL)                      AS _not_repriced,
    arraySort(groupUniqArray(_reason))           AS reasons
FROM
(
    SELECT *, $half_even AS _batch
    FROM
    (
        SELECT $dims cost_nanos, $units AS _units, $divisor AS _div, $background AS _reason
        FROM $db.usage_events
        WHERE $where AND NOT unpriced
    )
    WHERE _reason != ''
)
$group_by
)
ORDER BY $order_by
$limit
