-- max-tokens: whether successful calls cap their output, and how the cap compares with what they produce.
-- Percentiles are quantileExact (position floor(q * n) of the sorted values). Reads: raw events.
SELECT
    $dims
    count()                                                       AS calls,
    countIf(max_tokens IS NULL)                                   AS calls_without_max_tokens,
    quantileExactIf(0.5)(ifNull(max_tokens, 0), max_tokens IS NOT NULL) AS _p50_max,
    countIf(max_tokens IS NOT NULL)                               AS _with_max,
    quantileExact(0.5)(output_tokens)                             AS p50_output_tokens,
    quantileExact(0.99)(output_tokens)                            AS p99_output_tokens,
    sum(cost_nanos)                                               AS _cost
FROM $db.usage_events
WHERE $where AND status = 'ok'
$group_by
ORDER BY $order_by
$limit
