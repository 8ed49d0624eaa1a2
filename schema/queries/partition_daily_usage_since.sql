-- One Kafka partition's usage per project, account and bucket since a bucket, from a usage
-- table: the aggregator's quota counters start from these when it takes the partition.
SELECT
    project_id,
    account_id,
    toUInt32(bucket) AS bucket_start,
    -- Integer sums, exact; a Float64 twin tells when they would pass Int64, and the result
    -- then saturates instead of wrapping (a wrapped sum would read as negative usage).
    if(sum(toFloat64(input_tokens) + toFloat64(output_tokens)) + sum(toFloat64(adjusted_tokens)) >= 9.2e18,
       toInt64(9223372036854775807),
       toInt64(sum(input_tokens + output_tokens) + sum(adjusted_tokens))) AS tokens,
    if(sum(toFloat64(cost_nanos)) >= 9.2e18,
       toInt64(9223372036854775807),
       toInt64(sum(cost_nanos))) AS cost_nanos,
    toUInt64(max(kafka_offset)) AS last_offset
FROM usage_daily FINAL
WHERE kafka_partition = ? AND bucket >= toDateTime(?)
GROUP BY project_id, account_id, bucket_start
ORDER BY project_id, account_id, bucket_start
