-- Usage per hour and per day, per project × account × model × operation. Each Kafka
-- partition keeps its own row of a bucket (kafka_partition is in the key), replaced by every
-- fold with the row holding the highest offset; reads sum the partitions' rows with FINAL.
-- Latency: duration_hist counts LLM responses by duration in the log-spaced buckets of
-- schema::rollups::LATENCY_BOUNDS_MS (16 per decade, 1 ms to 1000 s, then one overflow bucket).
CREATE TABLE IF NOT EXISTS usage_hourly (
    project_id String,
    bucket DateTime,
    account_id String,
    model String,
    operation String,
    kafka_partition Int32,
    events UInt64,
    llm_requests UInt64,
    llm_responses UInt64,
    errors UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    cost_nanos Int64,
    provided_cost_nanos Int64,
    unpriced_events UInt64,
    duration_count UInt64,
    duration_sum_ms UInt64,
    duration_hist Array(UInt64),
    ttft_count UInt64,
    ttft_sum_ms UInt64,
    ttft_hist Array(UInt64),
    kafka_offset UInt64
) ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(bucket)
ORDER BY (project_id, bucket, kafka_partition, account_id, model, operation);

CREATE TABLE IF NOT EXISTS usage_daily (
    project_id String,
    bucket DateTime,
    account_id String,
    model String,
    operation String,
    kafka_partition Int32,
    events UInt64,
    llm_requests UInt64,
    llm_responses UInt64,
    errors UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    cost_nanos Int64,
    provided_cost_nanos Int64,
    unpriced_events UInt64,
    duration_count UInt64,
    duration_sum_ms UInt64,
    duration_hist Array(UInt64),
    ttft_count UInt64,
    ttft_sum_ms UInt64,
    ttft_hist Array(UInt64),
    kafka_offset UInt64
) ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(bucket)
ORDER BY (project_id, bucket, kafka_partition, account_id, model, operation);

-- Tool calls per hour and tool: calls, results, errors, and result durations.
CREATE TABLE IF NOT EXISTS tool_usage_hourly (
    project_id String,
    bucket DateTime,
    tool_name String,
    kafka_partition Int32,
    events UInt64,
    calls UInt64,
    results UInt64,
    errors UInt64,
    duration_count UInt64,
    duration_sum_ms UInt64,
    duration_hist Array(UInt64),
    kafka_offset UInt64
) ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(bucket)
ORDER BY (project_id, bucket, kafka_partition, tool_name);
