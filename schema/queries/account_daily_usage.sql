-- One account's usage per day, model and operation since a day (all partitions' rows summed).
SELECT
    toUInt32(bucket) AS day_start,
    model,
    operation,
    sum(input_tokens + output_tokens) AS tokens,
    sum(adjusted_tokens) AS adjusted_tokens,
    sum(cost_nanos) AS cost_nanos,
    sum(llm_requests) AS requests
FROM usage_daily FINAL
WHERE project_id = ? AND account_id = ? AND bucket >= toDateTime(?)
GROUP BY day_start, model, operation
ORDER BY day_start, model, operation
