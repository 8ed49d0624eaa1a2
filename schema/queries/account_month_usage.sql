SELECT account_id, toStartOfMonth(bucket) AS month, sum(input_tokens + output_tokens) AS tokens, sum(cost_nanos) AS cost_nanos, sum(llm_responses) AS llm_responses
FROM usage_daily FINAL
-- Month-level usage per account, derived from the daily rollup (partitions' rows summed).
WHERE project_id = ?
GROUP BY account_id, month
ORDER BY account_id, month
