SELECT project_id, session_id, event_id, event_type, ts, ts_ms, account_id, trace_id, span_id, parent_span_id, operation, model, provider, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, provided_cost_nanos, duration_ms, time_to_first_token_ms, status, tool_name, tool_call_id, error_type, error_message, error_stack, content, attributes, received_at_ms, kafka_partition, kafka_offset
FROM events FINAL
-- Every stored event of the partition's sessions that have an event in the range, up to the
-- control record, in the order they were folded.
WHERE kafka_partition = ? AND kafka_offset < ?
  AND (project_id, session_id) IN (
    SELECT project_id, session_id FROM events
    WHERE kafka_partition = ? AND kafka_offset < ? AND ts >= toDateTime(?) AND ts < toDateTime(?))
ORDER BY kafka_offset
