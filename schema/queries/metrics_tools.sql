SELECT tool_name, sum(calls) AS total_calls, sum(results) AS total_results, sum(errors) AS total_errors, sum(duration_count) AS total_duration_count, sum(duration_sum_ms) AS total_duration_sum_ms, sumForEach(duration_hist) AS total_duration_hist
FROM tool_usage_hourly FINAL
WHERE project_id = ? AND bucket >= toDateTime(?) AND bucket < toDateTime(?) AND (? = '' OR tool_name = ?)
GROUP BY tool_name
ORDER BY tool_name
