-- requests --by request: one row per request (tenant and request id) with all its attempts. Reads: raw events.
SELECT
    any(request_id)                      AS _request,
    any(tenant)                          AS _tenant,
    argMin(toString(feature), attempt)   AS _feature,
    count()                              AS attempts,
    sum(cost_nanos)                      AS _cost,
    sumIf(cost_nanos, status != 'ok')    AS _failed_cost,
    min(occurred_at)                     AS first_at,
    max(occurred_at)                     AS last_at,
    arraySort(groupUniqArray(model))     AS models
FROM $db.usage_events
WHERE $where
GROUP BY concat(toString(length(tenant)), ':', tenant, request_id)
ORDER BY _cost DESC, _tenant, _request
$limit
