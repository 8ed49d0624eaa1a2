//! Filling the store as the aggregator would have after folding a generated workload, and
//! what ClickHouse then holds.

use super::{Args, PROJECT};
use anyhow::Context;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use clickhouse::Row;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tally_schema::envelope::Envelope;
use tally_schema::event::Event;
use tally_schema::pricing::PriceTable;
use tally_schema::rollups::{Granularity, ToolKey, ToolRow, UsageKey, UsageRow};
use tally_schema::rows::{EventRow, Priced, SessionRow};
use tally_tests::workload::Workload;

pub struct Filled {
    pub events: u64,
    pub sessions: u64,
    /// Session ids to read timelines of, a uniform sample of all.
    pub sample: Vec<String>,
}

/// Rows of one table waiting to be inserted.
struct Pending<T> {
    table: &'static str,
    rows: Vec<T>,
}

impl<T> Pending<T>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    fn new(table: &'static str) -> Self {
        Self {
            table,
            rows: Vec::new(),
        }
    }

    async fn flush_if_full(
        &mut self,
        client: &clickhouse::Client,
        batch: usize,
    ) -> anyhow::Result<()> {
        if self.rows.len() >= batch {
            self.flush(client).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, client: &clickhouse::Client) -> anyhow::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut insert = client.insert::<T>(self.table).await?;
        for row in self.rows.drain(..) {
            insert.write(&row).await?;
        }
        insert.end().await?;
        Ok(())
    }
}

/// The Kafka partition a session's events would go to (ingest keys records by project and
/// session); FNV-1a keeps it stable across runs.
fn partition_of(session_id: &str, partitions: u32) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in PROJECT.bytes().chain([b':']).chain(session_id.bytes()) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    (hash % partitions.max(1)) as i32
}

/// Generates the sessions one UTC day at a time and writes every table as the aggregator
/// would after folding them: one row per event, one per session, one per (bucket, partition,
/// account, model, operation) and per (hour, partition, tool). A session starting late in a
/// day may end in the next one, so a day's rollup rows are written once no later session can
/// touch them.
pub async fn fill(
    args: &Args,
    client: &clickhouse::Client,
    start: DateTime<Utc>,
) -> anyhow::Result<Filled> {
    let prices = PriceTable::built_in();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut workload = Workload::new(args.seed, start);
    let mut offsets: HashMap<i32, u64> = HashMap::new();
    let mut usage: HashMap<UsageKey, UsageRow> = HashMap::new();
    let mut tools: HashMap<ToolKey, ToolRow> = HashMap::new();
    let mut events = Pending::<EventRow>::new("events");
    let mut sessions = Pending::<SessionRow>::new("sessions");
    let mut hourly = Pending::<UsageRow>::new("usage_hourly");
    let mut daily = Pending::<UsageRow>::new("usage_daily");
    let mut tool_rows = Pending::<ToolRow>::new("tool_usage_hourly");
    let per_day = args.events / u64::from(args.days.max(1));
    let mut filled = Filled {
        events: 0,
        sessions: 0,
        sample: Vec::new(),
    };
    let sample_every = (args.events / 10 / 20_000).max(1);

    for day in 0..args.days {
        let day_start = start + ChronoDuration::days(i64::from(day));
        let day_end = day_start + ChronoDuration::days(1);
        let mut day_events = 0;
        while day_events < per_day {
            let at = day_start + ChronoDuration::seconds(rng.random_range(0..86_400));
            workload.set_start(at);
            let account = format!("acct-{}", rng.random_range(0..args.accounts.max(1)));
            let index = filled.sessions as usize;
            let wire = workload.session(index, &account);
            let session_id = wire[0]["session_id"]
                .as_str()
                .context("a session id")?
                .to_owned();
            let partition = partition_of(&session_id, args.partitions);
            let mut session = SessionRow::empty(PROJECT, &session_id, partition);
            for value in wire {
                let event: Event = serde_json::from_value(value)?;
                let offset = offsets.entry(partition).or_insert(0);
                *offset += 1;
                let cost = price(&prices, &event);
                session.fold(&event, cost, partition, *offset);
                for granularity in Granularity::ALL {
                    let key = UsageKey::of(granularity, PROJECT, &event, partition);
                    usage
                        .entry(key.clone())
                        .or_insert_with(|| UsageRow::empty(&key))
                        .fold(&event, cost, *offset);
                }
                if let Some(key) = ToolKey::of(PROJECT, &event, partition) {
                    tools
                        .entry(key.clone())
                        .or_insert_with(|| ToolRow::empty(&key))
                        .fold(&event, *offset);
                }
                let received = event.timestamp.0 + 150;
                let envelope = Envelope::new(PROJECT, received, event);
                events
                    .rows
                    .push(EventRow::new(envelope, partition, *offset));
                day_events += 1;
            }
            if filled.sessions.is_multiple_of(sample_every) {
                filled.sample.push(session_id);
            }
            filled.sessions += 1;
            sessions.rows.push(session);
            events.flush_if_full(client, args.insert_batch).await?;
            sessions.flush_if_full(client, args.insert_batch).await?;
        }
        filled.events += day_events;

        // Rows of buckets before the next day are complete.
        let done = u32::try_from(day_end.timestamp())?;
        let complete: Vec<UsageKey> = usage.keys().filter(|k| k.bucket < done).cloned().collect();
        for key in complete {
            if let Some(row) = usage.remove(&key) {
                match key.granularity {
                    Granularity::Hour => hourly.rows.push(row),
                    Granularity::Day => daily.rows.push(row),
                }
            }
        }
        let complete: Vec<ToolKey> = tools.keys().filter(|k| k.bucket < done).cloned().collect();
        for key in complete {
            if let Some(row) = tools.remove(&key) {
                tool_rows.rows.push(row);
            }
        }
        hourly.flush_if_full(client, args.insert_batch).await?;
        daily.flush_if_full(client, args.insert_batch).await?;
        tool_rows.flush_if_full(client, args.insert_batch).await?;
        println!(
            "day {}: {day_events} events, {} sessions so far",
            day_start.format("%F"),
            filled.sessions
        );
    }
    for (key, row) in usage.drain() {
        match key.granularity {
            Granularity::Hour => hourly.rows.push(row),
            Granularity::Day => daily.rows.push(row),
        }
    }
    tool_rows.rows.extend(tools.into_values());
    events.flush(client).await?;
    sessions.flush(client).await?;
    hourly.flush(client).await?;
    daily.flush(client).await?;
    tool_rows.flush(client).await?;
    Ok(filled)
}

fn price(prices: &PriceTable, event: &Event) -> Priced {
    if event.usage.is_zero() {
        return Priced::NoUsage;
    }
    event
        .model
        .as_deref()
        .and_then(|model| prices.cost_nanos(model, event.timestamp, &event.usage))
        .map_or(Priced::Unpriced, Priced::Cost)
}

/// Waits until ClickHouse has no merge running for 10 s in a row (at most 15 minutes), as a
/// store that has been taking traffic for a while would be; returns the seconds waited.
pub async fn wait_for_merges(client: &clickhouse::Client, database: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    while started.elapsed() < Duration::from_secs(900) {
        let running: u64 = client
            .query("SELECT count() FROM system.merges WHERE database = ?")
            .bind(database)
            .fetch_one()
            .await?;
        if running == 0 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(10) {
                break;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

#[derive(Debug, Row, Deserialize)]
struct TableSize {
    table: String,
    parts: u64,
    rows: u64,
    bytes_on_disk: u64,
    compressed: u64,
    uncompressed: u64,
}

/// Rows and bytes of every table, from the active parts.
pub async fn report_sizes(client: &clickhouse::Client, database: &str) -> anyhow::Result<()> {
    let sizes = client
        .query(
            "SELECT table, count() AS parts, sum(rows) AS total_rows, sum(bytes_on_disk) AS total_bytes_on_disk, \
             sum(data_compressed_bytes) AS total_compressed, sum(data_uncompressed_bytes) AS total_uncompressed \
             FROM system.parts WHERE database = ? AND active GROUP BY table ORDER BY table",
        )
        .bind(database)
        .fetch_all::<TableSize>()
        .await?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mut total = 0;
    for size in &sizes {
        total += size.bytes_on_disk;
        println!(
            "size {}: rows={} parts={} on_disk={:.1} MiB compressed={:.1} MiB uncompressed={:.1} MiB",
            size.table,
            size.rows,
            size.parts,
            mib(size.bytes_on_disk),
            mib(size.compressed),
            mib(size.uncompressed)
        );
    }
    println!("size total on disk: {:.1} MiB", mib(total));
    Ok(())
}
