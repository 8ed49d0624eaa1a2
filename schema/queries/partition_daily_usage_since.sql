-- One Kafka partition's usage per project, account and bucket since a bucket, from a usage
-- table: the aggregator's quota counters start from these when it takes the partition.
SELECT
    project_id,
    account_id,
    toUInt32(bucket) AS bucket_start,
    toInt64(sum(input_tokens + output_tokens) + sum(adjusted_tokens)) AS tokens,
    toInt64(sum(cost_nanos)) AS cost_nanos,
    toUInt64(max(kafka_offset)) AS last_offset
FROM usage_daily FINAL
WHERE kafka_partition = ? AND bucket >= toDateTime(?)
GROUP BY project_id, account_id, bucket_start
ORDER BY project_id, account_id, bucket_start
