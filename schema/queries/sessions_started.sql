SELECT count() AS sessions, countIf(errors > 0) AS sessions_with_errors
FROM (
    -- FINAL first, the filters after (see sessions_list.sql).
    SELECT account_id, first_ts_ms, errors, models
    FROM sessions FINAL
    WHERE project_id = ?
)
WHERE first_ts_ms >= ? AND first_ts_ms < ?
  AND (? = '' OR account_id = ?)
  AND (? = '' OR has(models, ?))
