SELECT project_id, session_id, event_id, event_type, ts, ts_ms, account_id, trace_id, span_id, parent_span_id, operation, model, provider, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, provided_cost_nanos, duration_ms, time_to_first_token_ms, status, tool_name, tool_call_id, error_type, error_message, error_stack, if(?, content, '') AS content, attributes, received_at_ms, kafka_partition, kafka_offset
FROM events
WHERE project_id = ? AND session_id = ?
    -- After the cursor (the previous page's last event), when there is one.
    AND (? = 0 OR ts_ms > ? OR (ts_ms = ? AND event_id > ?))
-- Copies of an event not yet merged away (a redelivered record) collapse here rather than
-- with FINAL, which merges a granule of every part and took three times as long on a large
-- store: the copy with the highest offset stays. Ties on the timestamp go by event_id.
ORDER BY ts_ms, event_id, kafka_offset DESC
LIMIT 1 BY event_id
LIMIT ?
