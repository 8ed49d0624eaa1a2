//! tally-readbench: the read API on a large store. Fills a fresh database with a month of
//! generated sessions, written straight into the raw event table and the rollups with the
//! same fold functions the aggregator uses (through ingest, Kafka and the aggregator the same
//! rows take several times as long), then times the read routes through an in-process ingest
//! and reports the data size on disk. Used by `make bench`; drops its database at the end.

use anyhow::Context;
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, TimeZone, Utc};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tally_ingest::auth::{ProjectConfig, Redaction, Scope};
use tally_ingest::config::IngestConfig;
use tally_ingest::read::rollup::{RollupFilters, RollupRange, RollupScope};
use tally_runtime::clickhouse::ClickHouseConfig;
use tally_runtime::kafka::KafkaConfig;
use tally_schema::queries::params::{self, Params};
use tally_tests::env::{clickhouse_url, kafka_brokers, new_key};

mod fill;

use fill::{fill, report_sizes, wait_for_merges};

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
        let started = params::SessionsStarted {
            project_id: PROJECT,
            from_ms: start.timestamp_millis(),
            to_ms: end.timestamp_millis(),
            account_id: "",
            model: "",
        };
        started.bind(q)
    };
    let n = args.repeats.max(1);
    // Whole days [start, end), no filters.
    let days = RollupRange {
        days: (
            u32::try_from(start.timestamp())?,
            u32::try_from(end.timestamp())?,
        ),
        hours: [(0, 0); 2],
    };
    let filters = RollupFilters::default();
    let scope = RollupScope {
        project_id: PROJECT,
        range: &days,
        filters: &filters,
    };
    let window = |q| scope.bind(q);
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
