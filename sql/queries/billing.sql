-- billing: the provider's own billed cost (billed_cost_nanos, when the app reports it) against costplane's price
-- of the same events. Reads: raw events.
SELECT
    $dims
    countIf(billed_cost_nanos IS NOT NULL)                        AS events_with_billed,
    sumIf(ifNull(billed_cost_nanos, 0), billed_cost_nanos IS NOT NULL) AS billed_nanos,
    sumIf(cost_nanos, billed_cost_nanos IS NOT NULL)              AS computed_nanos
FROM $db.usage_events
WHERE $where
$group_by
HAVING events_with_billed > 0
ORDER BY $order_by
$limit
