SELECT DISTINCT toUInt32(bucket) AS bucket_start, kafka_partition, account_id, model, operation
FROM usage_hourly
-- Which rows exist in these buckets and partitions, for the aggregator's filter of rows that
-- cannot exist yet: any version of a row will do, so no FINAL.
WHERE project_id = ? AND bucket IN (SELECT toDateTime(toUInt32(arrayJoin(?))))
  AND kafka_partition IN (SELECT toInt32(arrayJoin(?)))
