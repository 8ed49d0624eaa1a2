-- The raw event store: one row per accepted event. Resends of an event (same project,
-- session and event_id) collapse into one row when parts merge; reads use FINAL.
-- Partitioned by month, so retention drops whole partitions.
CREATE TABLE IF NOT EXISTS events (
    project_id String,
    session_id String,
    event_id String,
    event_type String,
    ts DateTime,
    ts_ms Int64,
    account_id String,
    trace_id String,
    span_id String,
    parent_span_id String,
    operation String,
    model String,
    provider String,
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    provided_cost_nanos Nullable(Int64),
    duration_ms Nullable(UInt64),
    time_to_first_token_ms Nullable(UInt64),
    status String,
    tool_name String,
    tool_call_id String,
    error_type String,
    error_message String,
    error_stack String,
    content String,
    attributes String,
    received_at_ms Int64,
    kafka_partition Int32,
    kafka_offset UInt64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (project_id, session_id, event_id);

-- One row per session, rewritten by the aggregator after each fold. The row with the
-- highest kafka_offset (the last record folded into it) wins; reads use FINAL.
CREATE TABLE IF NOT EXISTS sessions (
    project_id String,
    session_id String,
    account_id String,
    first_ts_ms Int64,
    last_ts_ms Int64,
    event_count UInt64,
    event_types Array(String),
    event_type_counts Array(UInt64),
    llm_calls UInt64,
    tool_calls UInt64,
    errors UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    -- Cost by Tally's price table (nano-USD), beside the cost the SDK provided, and how many
    -- events had usage but no price (unknown model; counted at zero).
    cost_nanos Int64,
    provided_cost_nanos Int64,
    unpriced_events UInt64,
    models Array(String),
    ended UInt8,
    kafka_partition Int32,
    kafka_offset UInt64
) ENGINE = ReplacingMergeTree(kafka_offset)
ORDER BY (project_id, session_id);
