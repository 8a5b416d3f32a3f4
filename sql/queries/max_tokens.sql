-- max-tokens: whether successful calls cap their output, and how the cap compares with what they produce.
-- Percentiles are quantileExact (position floor(q * n) of the sorted values). _excess_cost_nanos (for the
-- advisor): what the output tokens above the group's p99 cost on calls without max_tokens, priced per call at the
-- call's own output price ($units / $divisor with the output bucket replaced). Reads: raw events.
SELECT
    *,
    sum(calls) OVER ()                                            AS _total_calls,
    sum(calls_without_max_tokens) OVER ()                         AS _total_without
FROM
(
    SELECT
        $outer_dims
        count()                                                   AS calls,
        countIf(max_tokens IS NULL)                               AS calls_without_max_tokens,
        quantileExactIf(0.5)(ifNull(max_tokens, 0), max_tokens IS NOT NULL) AS _p50_max,
        countIf(max_tokens IS NOT NULL)                           AS _with_max,
        quantileExact(0.5)(output_tokens)                         AS p50_output_tokens,
        any(_p99)                                                 AS p99_output_tokens,
        sum(cost_nanos)                                           AS _cost,
        sum(ifNull($half_even, 0))                                AS _excess_cost_nanos
    FROM
    (
        SELECT *, $units AS _units, $divisor AS _div
        FROM
        (
            SELECT
                *,
                if(max_tokens IS NULL, greatest(toInt64(output_tokens) - toInt64(_p99), 0), 0) AS _excess
            FROM
            (
                SELECT
                    $dims provider, model, service_tier, occurred_at, input_tokens, cached_input_tokens,
                    cache_write_tokens, output_tokens, reasoning_tokens, max_tokens, cost_nanos,
                    quantileExact(0.99)(output_tokens) OVER ($partition_by) AS _p99
                FROM $db.usage_events
                WHERE $where AND status = 'ok'
            )
        )
    )
    $group_by
)
ORDER BY $order_by
$limit
