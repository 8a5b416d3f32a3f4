-- caching: prompt-cache reads and what they saved; long system prompts billed uncached and what caching them would
-- save; calls the app served from its own result cache. Reads: rollup_spend_*.
-- The totals beside each row are taken over every group, before --top.
SELECT
    *,
    sum(would_save_nanos) OVER () AS _total_would_save_nanos,
    sum(saved_nanos) OVER () AS _total_saved_nanos
FROM
(
    SELECT
        $dims
        sum(input_tokens) + sum(cached_input_tokens) + sum(cache_write_tokens) AS prompt_tokens,
        sum(cached_input_tokens)             AS _cached,
        sum(cache_saved_nanos)               AS saved_nanos,
        sum(uncached_prefix_tokens)          AS uncached_prefix_tokens,
        sum(uncached_prefix_cost_nanos)      AS uncached_prefix_cost_nanos,
        sum(prefix_cache_saving_nanos)       AS would_save_nanos,
        sum(result_cache_hits)               AS result_cache_hits,
        sum(result_cache_avoided_nanos)      AS result_cache_avoided_nanos
    FROM $source
    WHERE $where
    $group_by
)
ORDER BY $order_by
$limit
