SELECT toUInt32(intDiv(toUInt32(bucket) - ?, ?) * ? + ?) AS point, multiIf(? = 'model', model, ? = 'operation', operation, ? = 'account', account_id, '') AS group_key, sum(events) AS total_events, sum(llm_requests) AS total_llm_requests, sum(llm_responses) AS total_llm_responses, sum(errors) AS total_errors, sum(input_tokens) AS total_input_tokens, sum(output_tokens) AS total_output_tokens, sum(cache_read_tokens) AS total_cache_read_tokens, sum(cache_write_tokens) AS total_cache_write_tokens, sum(adjusted_tokens) AS total_adjusted_tokens, sum(cost_nanos) AS total_cost_nanos, sum(provided_cost_nanos) AS total_provided_cost_nanos, sum(unpriced_events) AS total_unpriced_events
FROM (
    -- Whole UTC days from the daily rollup, the hours around them from the hourly one; an
    -- empty range is [0, 0). An empty filter value means no filter.
    SELECT bucket, account_id, model, operation, events, llm_requests, llm_responses, errors, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, adjusted_tokens, cost_nanos, provided_cost_nanos, unpriced_events
    FROM usage_daily FINAL
    WHERE project_id = ? AND bucket >= toDateTime(?) AND bucket < toDateTime(?)
      AND (? = '' OR account_id = ?) AND (? = '' OR model = ?) AND (? = '' OR operation = ?)
    UNION ALL
    SELECT bucket, account_id, model, operation, events, llm_requests, llm_responses, errors, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, adjusted_tokens, cost_nanos, provided_cost_nanos, unpriced_events
    FROM usage_hourly FINAL
    WHERE project_id = ?
      AND ((bucket >= toDateTime(?) AND bucket < toDateTime(?)) OR (bucket >= toDateTime(?) AND bucket < toDateTime(?)))
      AND (? = '' OR account_id = ?) AND (? = '' OR model = ?) AND (? = '' OR operation = ?)
)
GROUP BY point, group_key
ORDER BY point, group_key
LIMIT ?
