-- Quotas. Usage adjustments (credits and debits from the admin API) are events; their token
-- amount is signed, so it gets its own column in the usage rollups (cost_nanos is signed already).
ALTER TABLE usage_hourly ADD COLUMN adjusted_tokens Int64 DEFAULT 0 AFTER cache_write_tokens;

ALTER TABLE usage_daily ADD COLUMN adjusted_tokens Int64 DEFAULT 0 AFTER cache_write_tokens;

-- Where each account stands against each of its limits, written by the aggregator whenever the
-- account's usage changes; the row with the highest version is current (read with FINAL).
-- limit_value and used are tokens, requests, or nano-USD for cost limits (see limit_name).
CREATE TABLE IF NOT EXISTS quota_status (
    project_id String,
    account_id String,
    plan String,
    limit_name String,
    window String,
    window_start DateTime,
    limit_value UInt64,
    used UInt64,
    status String,
    updated_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (project_id, account_id, limit_name, window_start);

-- Every threshold crossing, once per account, limit, window and threshold (warning, critical,
-- exceeded); the same records go to the Kafka topic tally.alerts.v1.
CREATE TABLE IF NOT EXISTS quota_alerts (
    alert_id String,
    project_id String,
    account_id String,
    plan String,
    limit_name String,
    window String,
    window_start DateTime,
    threshold String,
    threshold_percent UInt16,
    limit_value UInt64,
    used UInt64,
    emitted_at DateTime
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (project_id, account_id, limit_name, window_start, threshold);
