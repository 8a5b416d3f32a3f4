-- embeddings: content embedded again. A call repeats when the same tenant embedded the same content_hash with
-- the same model earlier in the range (ordered by occurred_at, then event_id). Calls without a content_hash
-- cannot repeat. Reads: raw events with operation = embedding.
SELECT
    $outer_dims
    count()                                      AS embedding_calls,
    uniqExactIf((tenant, model, content_hash), content_hash IS NOT NULL) AS distinct_content,
    countIf(_seq > 1)                            AS repeat_calls,
    sumIf(cost_nanos, _seq > 1)                  AS repeat_cost_nanos,
    sum(repeat_calls) OVER ()                    AS _total_repeats,
    sum(repeat_cost_nanos) OVER ()               AS _total_repeat_cost
FROM
(
    SELECT
        $dims tenant, model, content_hash, cost_nanos,
        if(content_hash IS NULL, 0,
           row_number() OVER (PARTITION BY tenant, model, content_hash ORDER BY occurred_at, event_id)) AS _seq
    FROM $db.usage_events
    WHERE $where AND ifNull(operation, '') = 'embedding'
)
$group_by
ORDER BY $order_by
$limit
