SELECT project_id, session_id, account_id, first_ts_ms, last_ts_ms, event_count, event_types, event_type_counts, llm_calls, tool_calls, errors, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, provided_cost_nanos, unpriced_events, models, ended, kafka_partition, kafka_offset
FROM (
    -- FINAL first, the filters after: a session's start, errors and models change as events
    -- fold into it, so only its latest row may be tested against them.
    SELECT project_id, session_id, account_id, first_ts_ms, last_ts_ms, event_count, event_types, event_type_counts, llm_calls, tool_calls, errors, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, provided_cost_nanos, unpriced_events, models, ended, kafka_partition, kafka_offset
    FROM sessions FINAL
    WHERE project_id = ?
)
WHERE first_ts_ms >= ? AND first_ts_ms < ?
  -- An empty filter value means no filter.
  AND (? = '' OR account_id = ?)
  AND (? = '' OR (errors > 0) = (? = 'error'))
  AND (? = '' OR has(models, ?))
  -- Keyset pagination, newest first: only sessions after the cursor's (start, session id).
  AND (? = 0 OR (first_ts_ms, session_id) < (?, ?))
ORDER BY first_ts_ms DESC, session_id DESC
LIMIT ?
