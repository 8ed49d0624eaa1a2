SELECT model, sum(duration_count) AS total_duration_count, sum(duration_sum_ms) AS total_duration_sum_ms, sumForEach(duration_hist) AS total_duration_hist, sum(ttft_count) AS total_ttft_count, sum(ttft_sum_ms) AS total_ttft_sum_ms, sumForEach(ttft_hist) AS total_ttft_hist
FROM (
    -- Whole UTC days from the daily rollup, the hours around them from the hourly one; an
    -- empty range is [0, 0). An empty filter value means no filter.
    SELECT model, duration_count, duration_sum_ms, duration_hist, ttft_count, ttft_sum_ms, ttft_hist
    FROM usage_daily FINAL
    WHERE project_id = ? AND bucket >= toDateTime(?) AND bucket < toDateTime(?)
      AND (? = '' OR account_id = ?) AND (? = '' OR model = ?) AND (? = '' OR operation = ?)
    UNION ALL
    SELECT model, duration_count, duration_sum_ms, duration_hist, ttft_count, ttft_sum_ms, ttft_hist
    FROM usage_hourly FINAL
    WHERE project_id = ?
      AND ((bucket >= toDateTime(?) AND bucket < toDateTime(?)) OR (bucket >= toDateTime(?) AND bucket < toDateTime(?)))
      AND (? = '' OR account_id = ?) AND (? = '' OR model = ?) AND (? = '' OR operation = ?)
)
GROUP BY model
HAVING total_duration_count > 0 OR total_ttft_count > 0
ORDER BY model
