//! tally-readbench: the read API on a large store. Fills a fresh database with a month of
//! generated sessions, written straight into the raw event table and the rollups with the
//! same fold functions the aggregator uses (through ingest, Kafka and the aggregator the same
//! rows take several times as long), then times the read routes through an in-process ingest
//! and reports the data size on disk. Used by `make bench`; drops its database at the end.

use anyhow::Context;
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, TimeZone, Utc};
use clap::Parser;
use clickhouse::Row;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tally_ingest::auth::{ProjectConfig, Redaction, Scope};
use tally_ingest::config::IngestConfig;
use tally_runtime::clickhouse::ClickHouseConfig;
use tally_runtime::kafka::KafkaConfig;
use tally_schema::envelope::Envelope;
use tally_schema::event::Event;
use tally_schema::pricing::PriceTable;
use tally_schema::rollups::{Granularity, ToolKey, ToolRow, UsageKey, UsageRow};
use tally_schema::rows::{EventRow, Priced, SessionRow};
use tally_tests::env::{clickhouse_url, kafka_brokers, new_key};
use tally_tests::workload::Workload;

const PROJECT: &str = "bench";

#[derive(Debug, Parser)]
#[command(name = "tally-readbench")]
struct Args {
    /// Events to generate (about ten a session).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Days they spread over, ending at the last UTC midnight.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Accounts the sessions are billed to, uniformly.
    #[arg(long, default_value_t = 1_000)]
    accounts: usize,
    /// Kafka partitions the rows are attributed to (each keeps its own rollup rows).
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// Rows per insert.
    #[arg(long, default_value_t = 100_000)]
    insert_batch: usize,
    /// Timelines read, each of a random session.
    #[arg(long, default_value_t = 500)]
    timelines: usize,
    /// Times each metrics route is read.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Keep the database afterwards (its name is printed).
    #[arg(long)]
    keep: bool,
    /// Also time the served queries in ClickHouse alone, without FINAL, and on a rollup
    /// without the account dimension (scratch tables), to show where the time goes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    analyze: bool,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let clickhouse = ClickHouseConfig {
        url: clickhouse_url(),
        database: format!("tally_readbench_{}", Utc::now().timestamp()),
        ..ClickHouseConfig::default()
    };
    let result = run(&args, &clickhouse).await;
    if !args.keep {
        let _ = clickhouse
            .server_client()
            .query(&format!("DROP DATABASE IF EXISTS {}", clickhouse.database))
            .execute()
            .await;
    }
    result
}

async fn run(args: &Args, clickhouse: &ClickHouseConfig) -> anyhow::Result<()> {
    tally_runtime::migrate::run(clickhouse).await?;
    println!("database={}", clickhouse.database);
    let client = clickhouse.client();
    let end = Utc
        .timestamp_opt(Utc::now().timestamp() / 86_400 * 86_400, 0)
        .single()
        .context("midnight")?;
    let start = end - ChronoDuration::days(i64::from(args.days));

    let started = Instant::now();
    let filled = fill(args, &client, start).await?;
    let fill_secs = started.elapsed().as_secs_f64();
    println!(
        "filled events={} sessions={} in {fill_secs:.0} s ({:.0} events/s, generation and inserts)",
        filled.events,
        filled.sessions,
        filled.events as f64 / fill_secs
    );
    let merged = wait_for_merges(&client, &clickhouse.database).await?;
    println!("background merges settled after {merged:.0} s");
    report_sizes(&client, &clickhouse.database).await?;

    let (key, key_config) = new_key(&[Scope::Read]);
    let ingest_config = IngestConfig {
        listen: "127.0.0.1:0".into(),
        workers: 2,
        kafka: KafkaConfig {
            brokers: kafka_brokers(),
            ..KafkaConfig::default()
        },
        clickhouse: clickhouse.clone(),
        projects: vec![ProjectConfig {
            id: PROJECT.into(),
            keys: vec![key_config],
            redact: Redaction::default(),
        }],
        ..IngestConfig::default()
    };
    let (ingest, server) = tally_ingest::build(ingest_config)?;
    tokio::spawn(server);
    let reader = Reader {
        http: reqwest::Client::new(),
        base: format!("http://{}", ingest.addr),
        key,
    };

    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut timeline = Vec::new();
    // One read first: the server and ClickHouse's caches warm up on it, not on the figures.
    reader
        .timed(&format!("/v1/sessions/{}/timeline", filled.sample[0]))
        .await?;
    for _ in 0..args.timelines {
        let session = &filled.sample[rng.random_range(0..filled.sample.len())];
        timeline.push(
            reader
                .timed(&format!("/v1/sessions/{session}/timeline"))
                .await?,
        );
    }
    println!("{}", Timings::of(&timeline).line("timeline of one session"));

    let range = format!(
        "from={}&to={}",
        start.to_rfc3339_opts(SecondsFormat::Secs, true),
        end.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let routes = [
        (
            "metrics summary, 30 days",
            format!("/v1/metrics/summary?{range}"),
        ),
        (
            "latency percentiles, 30 days",
            format!("/v1/metrics/latency?{range}"),
        ),
        (
            "usage by day and model, 30 days",
            format!("/v1/metrics/usage?{range}&granularity=day&group_by=model"),
        ),
        (
            "cost breakdown, 30 days",
            format!("/v1/metrics/cost?{range}"),
        ),
        (
            "tool analytics, 30 days",
            format!("/v1/metrics/tools?{range}"),
        ),
        (
            "sessions list, first page of 50, 30 days",
            format!("/v1/sessions?{range}&limit=50"),
        ),
        (
            "sessions list of one account, 30 days",
            format!("/v1/sessions?{range}&account_id=acct-7"),
        ),
    ];
    for (name, path) in routes {
        let mut times = Vec::new();
        let cold = reader.timed(&path).await?;
        for _ in 0..args.repeats {
            times.push(reader.timed(&path).await?);
        }
        println!(
            "{} (first read {:.1} ms)",
            Timings::of(&times).line(name),
            cold.as_secs_f64() * 1000.0
        );
    }
    ingest.handle.stop(true).await;

    if args.analyze {
        analyze(args, &client, start, end).await?;
    }
    Ok(())
}

/// Binds of the metrics queries' rollup union for whole days `[start, end)`, no filters.
fn rollup_binds(
    mut query: clickhouse::query::Query,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> clickhouse::query::Query {
    let (from, to) = (start.timestamp(), end.timestamp());
    query = query.bind(PROJECT).bind(from).bind(to);
    for _ in 0..6 {
        query = query.bind("");
    }
    query = query.bind(PROJECT);
    for _ in 0..4 {
        query = query.bind(0);
    }
    for _ in 0..6 {
        query = query.bind("");
    }
    query
}

/// Times a query run in ClickHouse alone, its answer read whole.
async fn time_query(
    client: &clickhouse::Client,
    sql: &str,
    bind: impl Fn(clickhouse::query::Query) -> clickhouse::query::Query,
    repeats: usize,
) -> anyhow::Result<Timings> {
    let mut times = Vec::new();
    for _ in 0..repeats {
        let started = Instant::now();
        bind(client.query(sql))
            .fetch_bytes("RowBinary")?
            .collect()
            .await?;
        times.push(started.elapsed());
    }
    Ok(Timings::of(&times))
}

/// Where the time of the 30-day summary and latency goes: the queries as served, timed in
/// ClickHouse alone; the same without FINAL (what deduplicating the rollups' row versions
/// costs); and the same on copies of the usage rollups without the account dimension, which
/// is what a project-wide rollup would hold. The copies are scratch tables of this database.
async fn analyze(
    args: &Args,
    client: &clickhouse::Client,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<()> {
    let totals = tally_schema::queries::METRICS_TOTALS.sql;
    let latency = tally_schema::queries::METRICS_LATENCY.sql;
    let sessions = tally_schema::queries::SESSIONS_STARTED.sql;
    let bind_sessions = |q: clickhouse::query::Query| {
        q.bind(PROJECT)
            .bind(start.timestamp_millis())
            .bind(end.timestamp_millis())
            .bind("")
            .bind("")
            .bind("")
            .bind("")
    };
    let n = args.repeats.max(1);
    let window = |q| rollup_binds(q, start, end);
    println!("where the time goes (ClickHouse alone, n={n} each):");
    for (name, sql) in [("usage totals", totals), ("latency histograms", latency)] {
        let served = time_query(client, sql, window, n).await?;
        let unfinal = sql.replace(" FINAL", "");
        let without = time_query(client, &unfinal, window, n).await?;
        println!(
            "  {name}: as served {} | without FINAL {}",
            served.short(),
            without.short()
        );
    }
    let served = time_query(client, sessions, bind_sessions, n).await?;
    let without = time_query(client, &sessions.replace(" FINAL", ""), bind_sessions, n).await?;
    println!(
        "  sessions started: as served {} | without FINAL {}",
        served.short(),
        without.short()
    );

    for table in ["usage_daily", "usage_hourly"] {
        client
            .query(&format!("CREATE TABLE {table}_projectwide AS {table}"))
            .execute()
            .await?;
        // Each partition's rows of a bucket summed over accounts: the rows a rollup keyed by
        // project, model and operation would hold.
        client
            .query(&format!(
                "INSERT INTO {table}_projectwide SELECT project_id, bucket, '' AS account_id, model, operation, \
                 kafka_partition, sum(events), sum(llm_requests), sum(llm_responses), sum(errors), \
                 sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens), \
                 sum(adjusted_tokens), sum(cost_nanos), sum(provided_cost_nanos), sum(unpriced_events), \
                 sum(duration_count), sum(duration_sum_ms), sumForEach(duration_hist), sum(ttft_count), \
                 sum(ttft_sum_ms), sumForEach(ttft_hist), max(kafka_offset) \
                 FROM {table} FINAL GROUP BY project_id, bucket, model, operation, kafka_partition"
            ))
            .execute()
            .await?;
    }
    let rows: u64 = client
        .query("SELECT count() FROM usage_daily_projectwide")
        .fetch_one()
        .await?;
    println!("  a rollup without accounts holds {rows} daily rows for the 30 days");
    for (name, sql) in [("usage totals", totals), ("latency histograms", latency)] {
        let projectwide = sql
            .replace("usage_daily FINAL", "usage_daily_projectwide FINAL")
            .replace("usage_hourly FINAL", "usage_hourly_projectwide FINAL");
        let timings = time_query(client, &projectwide, window, n).await?;
        println!("  {name} on it: {}", timings.short());
    }
    for table in ["usage_daily", "usage_hourly"] {
        client
            .query(&format!("DROP TABLE {table}_projectwide"))
            .execute()
            .await?;
    }
    Ok(())
}

struct Reader {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Reader {
    /// Time of one `GET path`, answer read whole; anything but 200 fails the bench.
    async fn timed(&self, path: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        let took = started.elapsed();
        anyhow::ensure!(
            status == 200,
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        Ok(took)
    }
}

struct Timings {
    sorted_ms: Vec<f64>,
}

impl Timings {
    fn of(times: &[Duration]) -> Self {
        let mut sorted_ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        sorted_ms.sort_by(f64::total_cmp);
        Self { sorted_ms }
    }

    fn quantile(&self, q: f64) -> f64 {
        let rank = ((q * self.sorted_ms.len() as f64).ceil() as usize).max(1);
        self.sorted_ms[rank.min(self.sorted_ms.len()) - 1]
    }

    fn short(&self) -> String {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms",
            self.quantile(0.5),
            self.quantile(0.99)
        )
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
            self.sorted_ms.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(1.0)
        )
    }
}

struct Filled {
    events: u64,
    sessions: u64,
    /// Session ids to read timelines of, a uniform sample of all.
    sample: Vec<String>,
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
async fn fill(
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
async fn wait_for_merges(client: &clickhouse::Client, database: &str) -> anyhow::Result<f64> {
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
async fn report_sizes(client: &clickhouse::Client, database: &str) -> anyhow::Result<()> {
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
