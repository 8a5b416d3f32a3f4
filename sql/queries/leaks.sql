-- leaks: the waterfall from what was spent to what the work needed. Each attempt's cost is split in this order,
-- every leak taking at most what the earlier ones left, so no nano is counted twice:
--   nonprod_nanos            the whole cost of attempts in a non-production environment
--   retry_waste_nanos        the whole cost of failed attempts (status != ok)
--   repeat_embedding_nanos   the whole cost of re-embedding content embedded before in the range
--   history_nanos            the prompt-side cost of re-sent conversation history (as the context report)
--   uncached_prefix_nanos    what caching a long system prompt would save (as the caching report)
--   model_saving_nanos       short-output calls (<= 64 tokens) re-priced on the routing map's cheaper model
--   batch_saving_nanos       background calls re-priced at the batch tier (as the batch report)
--   essential_nanos          the rest
-- Unpriced attempts cost 0 and add nothing. The _all_* columns are the whole range's totals (before --top), for
-- the overall row. Reads: raw events.
SELECT
    *,
    sum(total_cost_nanos) OVER () AS _all_total_cost_nanos,
    sum(nonprod_nanos) OVER () AS _all_nonprod_nanos,
    sum(retry_waste_nanos) OVER () AS _all_retry_waste_nanos,
    sum(repeat_embedding_nanos) OVER () AS _all_repeat_embedding_nanos,
    sum(history_nanos) OVER () AS _all_history_nanos,
    sum(uncached_prefix_nanos) OVER () AS _all_uncached_prefix_nanos,
    sum(model_saving_nanos) OVER () AS _all_model_saving_nanos,
    sum(batch_saving_nanos) OVER () AS _all_batch_saving_nanos,
    sum(essential_nanos) OVER () AS _all_essential_nanos
FROM
(
SELECT
    $outer_dims
    sum(cost_nanos)      AS total_cost_nanos,
    sum(x_nonprod)       AS nonprod_nanos,
    sum(x_retry)         AS retry_waste_nanos,
    sum(x_repeat)        AS repeat_embedding_nanos,
    sum(x_history)       AS history_nanos,
    sum(x_prefix)        AS uncached_prefix_nanos,
    sum(x_model)         AS model_saving_nanos,
    sum(x_batch)         AS batch_saving_nanos,
    sum(r7)              AS essential_nanos
FROM
(
    SELECT
        *,
        least(a_nonprod, cost_nanos)  AS x_nonprod, cost_nanos - x_nonprod AS r1,
        least(a_retry, r1)            AS x_retry,   r1 - x_retry           AS r2,
        least(a_repeat, r2)           AS x_repeat,  r2 - x_repeat          AS r3,
        least(a_history, r3)          AS x_history, r3 - x_history         AS r4,
        least(a_prefix, r4)           AS x_prefix,  r4 - x_prefix          AS r5,
        least(a_model, r5)            AS x_model,   r5 - x_model           AS r6,
        least(a_batch, r6)            AS x_batch,   r6 - x_batch           AS r7
    FROM
    (
        SELECT
            *,
            toInt64(if(env IS NOT NULL AND env NOT IN {production:Array(String)}, cost_nanos, 0)) AS a_nonprod,
            toInt64(if(status != 'ok', cost_nanos, 0))                                           AS a_retry,
            toInt64(if(_seq > 1, cost_nanos, 0))                                                 AS a_repeat,
            toInt64(_history)                                                                    AS a_history,
            toInt64(prefix_cache_saving_nanos)                                                   AS a_prefix,
            toInt64(if(output_tokens <= 64 AND _model_div IS NOT NULL,
                       greatest(cost_nanos - $model_half_even, 0), 0))                            AS a_model,
            toInt64(if(_reason != '' AND _batch_div IS NOT NULL,
                       greatest(cost_nanos - $batch_half_even, 0), 0))                            AS a_batch
        FROM
        (
            SELECT
                *,
                $model_units AS _model_units, $model_divisor AS _model_div,
                $batch_units AS _batch_units, $batch_divisor AS _batch_div,
                $background AS _reason,
                if(ifNull(operation, '') = 'embedding' AND content_hash IS NOT NULL,
                   row_number() OVER (PARTITION BY tenant, model, operation, content_hash
                                      ORDER BY occurred_at, event_id), 0) AS _seq
            FROM
            (
                $history_rows
            )
        )
    )
)
$group_by
)
ORDER BY $order_by
$limit
