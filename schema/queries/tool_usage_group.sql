SELECT project_id, bucket, tool_name, kafka_partition, events, calls, results, errors, duration_count, duration_sum_ms, duration_hist, kafka_offset
FROM tool_usage_hourly FINAL
-- Only the rows of the batch's tools: a group can hold rows of millions of them.
WHERE project_id = ? AND bucket = toDateTime(?) AND kafka_partition = ? AND tool_name IN (SELECT arrayJoin(?))
