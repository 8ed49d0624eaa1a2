SELECT project_id, bucket, account_id, model, operation, kafka_partition, events, llm_requests, llm_responses, errors, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, adjusted_tokens, cost_nanos, provided_cost_nanos, unpriced_events, duration_count, duration_sum_ms, duration_hist, ttft_count, ttft_sum_ms, ttft_hist, kafka_offset
FROM usage_hourly FINAL
-- Only the batch's buckets, partitions and accounts (a superset of the rows it touches, which
-- the aggregator picks out): one bucket can hold rows of millions of accounts.
WHERE project_id = ? AND bucket IN (SELECT toDateTime(toUInt32(arrayJoin(?))))
  AND kafka_partition IN (SELECT toInt32(arrayJoin(?)))
  AND account_id IN (SELECT arrayJoin(?))
