-- One Kafka partition's LLM requests and tokens per project, account and second since a
-- time, from the raw events: the sliding-minute quota counters of a partition just taken.
SELECT
    project_id,
    account_id,
    toInt64(intDiv(ts_ms, 1000)) AS second,
    toUInt64(countIf(event_type = 'llm_request')) AS requests,
    toUInt64(sum(input_tokens + output_tokens)) AS tokens
FROM events FINAL
WHERE kafka_partition = ? AND ts >= toDateTime(?)
GROUP BY project_id, account_id, second
ORDER BY project_id, account_id, second
