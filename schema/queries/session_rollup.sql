SELECT project_id, session_id, account_id, first_ts_ms, last_ts_ms, event_count, event_types, event_type_counts, llm_calls, tool_calls, errors, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, provided_cost_nanos, unpriced_events, models, models_truncated, ended, kafka_partition, kafka_offset
FROM sessions FINAL
WHERE project_id = ? AND session_id = ?
