-- spend: events, attempts, tokens per bucket and exact cost (integer nano-USD) grouped by the requested
-- dimensions. $dims / $group_by / $order_by are filled from a fixed whitelist of dimension expressions,
-- $filters from the given range and tenant (their values are bound as query parameters, never spliced).
-- events counts distinct requests (one request may have several attempts); attempts counts rows.
SELECT
    $dims
    uniqExact(tenant, request_id)  AS events,
    count()                        AS attempts,
    sum(input_tokens)              AS input_tokens,
    sum(cached_input_tokens)       AS cached_input_tokens,
    sum(cache_write_tokens)        AS cache_write_tokens,
    sum(output_tokens)             AS output_tokens,
    sum(reasoning_tokens)          AS reasoning_tokens,
    sum(cost_nanos)                AS cost_nanos
FROM $db.usage_events
WHERE 1 = 1 $filters
$group_by
ORDER BY $order_by
