-- requests: the cost of a request with all its attempts (retries included), per group: average, percentiles
-- (quantileExact: the value at 0-based position floor(q * n) of the sorted costs), maximum, attempts per request.
-- A request's group is the value of its first attempt. Requests are grouped by one text key, the tenant's length,
-- the tenant and the request id (unambiguous whatever the ids hold; ClickHouse hashes one string far faster than a
-- LowCardinality tenant beside a string). Reads: raw events (usage_events).
SELECT
    $outer_dims
    count()                              AS requests,
    sum(cost)                            AS _cost_sum,
    quantileExact(0.5)(cost)             AS p50_cost_nanos,
    quantileExact(0.95)(cost)            AS p95_cost_nanos,
    max(cost)                            AS max_cost_nanos,
    sum(attempts)                        AS _attempts,
    sum(sum(cost)) OVER ()               AS _total_cost_nanos
FROM
(
    SELECT
        $inner_dims
        count()                          AS attempts,
        sum(cost_nanos)                  AS cost
    FROM $db.usage_events
    WHERE $where
    GROUP BY concat(toString(length(tenant)), ':', tenant, request_id)
)
$group_by
ORDER BY $order_by
$limit
