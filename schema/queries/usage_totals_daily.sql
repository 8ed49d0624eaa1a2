SELECT account_id, model, sum(events) AS events, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens, sum(cache_write_tokens) AS cache_write_tokens, sum(cost_nanos) AS cost_nanos, sum(provided_cost_nanos) AS provided_cost_nanos
FROM usage_daily FINAL
WHERE project_id = ?
GROUP BY account_id, model
ORDER BY account_id, model
