SELECT project_id, bucket, tool_name, kafka_partition, events, calls, results, errors, duration_count, duration_sum_ms, duration_hist, kafka_offset
FROM tool_usage_hourly FINAL
WHERE project_id = ? AND bucket = toDateTime(?) AND kafka_partition = ?
