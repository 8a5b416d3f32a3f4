-- focus: chargeback rows in the FinOps FOCUS shape: one per day, provider, model and group. Reads: rollup_spend_*.
SELECT
    $dims
    toDate(bucket)                       AS _day,
    provider                             AS _provider,
    model                                AS _model,
    sum(cost_nanos)                      AS cost_nanos,
    sum(input_tokens) + sum(cached_input_tokens) + sum(cache_write_tokens) + sum(output_tokens)
        + sum(reasoning_tokens)          AS tokens
FROM $source
WHERE $where
GROUP BY $keys_then _day, _provider, _model
ORDER BY _day, _provider, _model $then_dims
