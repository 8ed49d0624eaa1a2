SELECT first_ts_ms, session_id
FROM (
    -- FINAL first, the filters after: a session's start, errors and models change as events
    -- fold into it, so only its latest row may be tested against them. Only the columns the
    -- filters and the order need: the page's whole rows are read by id afterwards
    -- (sessions_by_id), a few granules instead of every session's arrays.
    SELECT session_id, account_id, first_ts_ms, errors, models
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
