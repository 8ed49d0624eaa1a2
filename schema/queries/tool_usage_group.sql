SELECT project_id, bucket, tool_name, kafka_partition, events, calls, results, errors, duration_count, duration_sum_ms, duration_hist, kafka_offset
FROM tool_usage_hourly FINAL
-- Only the batch's buckets, partitions and tools (a superset of the rows it touches, which the
-- aggregator picks out).
WHERE project_id = ? AND bucket IN (SELECT toDateTime(toUInt32(arrayJoin(?))))
  AND kafka_partition IN (SELECT toInt32(arrayJoin(?)))
  AND tool_name IN (SELECT arrayJoin(?))
