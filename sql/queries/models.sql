-- models: over-selection. Per group (always including model): call count, output-size percentiles (quantileExact:
-- position floor(q * n) of the sorted values), the share of short outputs (<= 64 tokens: classification and
-- extraction shapes), the cost, and the same calls re-priced per call on the cheaper model the routing map names
-- ($units / $divisor, compiled from the catalog). Unpriced calls are left out. Reads: raw events.
SELECT
    $outer_dims
    count()                                      AS calls,
    quantileExact(0.5)(output_tokens)            AS p50_output_tokens,
    quantileExact(0.9)(output_tokens)            AS p90_output_tokens,
    countIf(output_tokens <= 64)                 AS _short,
    sum(cost_nanos)                              AS cost_nanos,
    sum(_cheaper)                                AS _cheaper_sum,
    countIf(_cheaper IS NULL)                    AS _not_repriced,
    any(_suggested_model)                        AS _suggested
FROM
(
    SELECT *, $half_even AS _cheaper
    FROM
    (
        SELECT $dims output_tokens, cost_nanos, $units AS _units, $divisor AS _div, $suggested AS _suggested_model
        FROM $db.usage_events
        WHERE $where AND NOT unpriced
    )
)
$group_by
ORDER BY $order_by
$limit
