//! tally-loadgen: posts batches of realistic events to ingest for a fixed time, then reports
//! accepted events/s, request latency percentiles, and how long until ClickHouse holds every
//! accepted event. Used by `make bench`.

use chrono::Utc;
use clap::Parser;
use serde_json::Value;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_tests::workload::{batch_body, Workload};

#[derive(Debug, Parser)]
#[command(name = "tally-loadgen")]
struct Args {
    /// ingest's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An ingest key of the project.
    #[arg(long, env = "TALLY_LOADGEN_KEY")]
    key: String,
    /// The project the key belongs to (for the visibility check).
    #[arg(long, default_value = "bench")]
    project: String,
    /// How long to post, in seconds.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Gzip the bodies.
    #[arg(long)]
    gzip: bool,
    /// ClickHouse HTTP URL and database to wait on for visibility; skipped when empty.
    #[arg(long, default_value = "")]
    clickhouse_url: String,
    #[arg(long, default_value = "tally")]
    database: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Target events/s across all connections; 0 posts as fast as answers come.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Every this many ms, post a one-event probe session and time until its rollup is
    /// readable through the read API (the key needs the read scope); 0 sends no probes.
    #[arg(long, default_value_t = 0)]
    probe_every_ms: u64,
}

#[derive(Default)]
struct WorkerReport {
    latencies_us: Vec<u64>,
    accepted: u64,
    failed_requests: u64,
}

fn batch_bytes(
    workload: &mut Workload,
    pending: &mut Vec<Value>,
    size: usize,
    gzip: bool,
    session: &mut usize,
) -> Vec<u8> {
    while pending.len() < size {
        *session += 1;
        let account = format!("acct-{}", *session % 50);
        pending.extend(workload.session(*session, &account));
    }
    let batch: Vec<Value> = pending.drain(..size).collect();
    let body = serde_json::to_vec(&batch_body(&batch)).unwrap_or_default();
    if !gzip {
        return body;
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(&body);
    encoder.finish().unwrap_or_default()
}

async fn worker(
    args: Arc<Args>,
    index: usize,
    deadline: Instant,
    client: reqwest::Client,
) -> WorkerReport {
    let mut report = WorkerReport::default();
    let mut workload = Workload::new(
        args.seed * 1000 + index as u64,
        Utc::now() - chrono::Duration::minutes(30),
    );
    let mut pending = Vec::new();
    let mut session = 0;
    // With a rate, each connection posts its share on a fixed schedule.
    let interval = (args.rate > 0).then(|| {
        Duration::from_secs_f64(args.batch_size as f64 * args.concurrency as f64 / args.rate as f64)
    });
    let mut next_at = Instant::now();
    while Instant::now() < deadline {
        if let Some(interval) = interval {
            tokio::time::sleep_until(next_at.into()).await;
            next_at += interval;
        }
        let body = batch_bytes(
            &mut workload,
            &mut pending,
            args.batch_size,
            args.gzip,
            &mut session,
        );
        let mut request = client
            .post(format!("{}/v1/batch", args.url))
            .bearer_auth(&args.key)
            .header("content-type", "application/json")
            .body(body);
        if args.gzip {
            request = request.header("content-encoding", "gzip");
        }
        let started = Instant::now();
        let answer = request.send().await;
        let elapsed = started.elapsed();
        match answer {
            Ok(response) if response.status().is_success() => {
                report.latencies_us.push(elapsed.as_micros() as u64);
                let body: Value = response.json().await.unwrap_or(Value::Null);
                report.accepted += body["accepted"].as_u64().unwrap_or(0);
            }
            Ok(_) | Err(_) => report.failed_requests += 1,
        }
    }
    report
}

/// Posts a one-event session now and then and times how long until the read API has its
/// rollup: the post → visible freshness, in microseconds.
async fn probe(args: Arc<Args>, deadline: Instant, client: reqwest::Client) -> Vec<u64> {
    let mut freshness = Vec::new();
    let mut index = 0;
    while Instant::now() < deadline {
        index += 1;
        let session_id = format!("probe-{}-{index}", args.seed);
        let event = serde_json::json!({
            "event_id": uuid::Uuid::new_v4().to_string(),
            "type": "custom",
            "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "session_id": session_id,
            "account_id": "probe",
        });
        let started = Instant::now();
        let posted = client
            .post(format!("{}/v1/batch", args.url))
            .bearer_auth(&args.key)
            .json(&batch_body(&[event]))
            .send()
            .await;
        if posted.map(|r| r.status().is_success()).unwrap_or(false) {
            let give_up = started + Duration::from_secs(60);
            while Instant::now() < give_up {
                let seen = client
                    .get(format!("{}/v1/sessions/{session_id}", args.url))
                    .bearer_auth(&args.key)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if seen {
                    freshness.push(started.elapsed().as_micros() as u64);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(args.probe_every_ms)).await;
    }
    freshness
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Events of the project stored in ClickHouse.
async fn stored_events(args: &Args) -> anyhow::Result<u64> {
    // Validation reads RowBinaryWithNamesAndTypes, which ClickHouse 18.16 does not write.
    let client = clickhouse::Client::default()
        .with_url(&args.clickhouse_url)
        .with_database(&args.database)
        .with_validation(false);
    Ok(client
        .query("SELECT count() FROM events WHERE project_id = ?")
        .bind(&args.project)
        .fetch_one()
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|i| tokio::spawn(worker(args.clone(), i, deadline, client.clone())))
        .collect();
    let probes = (args.probe_every_ms > 0)
        .then(|| tokio::spawn(probe(args.clone(), deadline, client.clone())));
    let mut latencies = Vec::new();
    let (mut accepted, mut failed) = (0, 0);
    for task in tasks {
        let report = task.await?;
        latencies.extend(report.latencies_us);
        accepted += report.accepted;
        failed += report.failed_requests;
    }
    let posting = started.elapsed();
    latencies.sort_unstable();
    println!(
        "batch_size={} concurrency={} gzip={}",
        args.batch_size, args.concurrency, args.gzip
    );
    println!("requests_ok={} requests_failed={failed}", latencies.len());
    println!(
        "accepted_events={accepted} events_per_sec={:.0}",
        accepted as f64 / posting.as_secs_f64()
    );
    println!(
        "latency_ms p50={:.2} p99={:.2} max={:.2}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0)
    );

    if let Some(probes) = probes {
        let mut freshness = probes.await?;
        freshness.sort_unstable();
        println!(
            "freshness_ms probes={} p50={:.0} p99={:.0} max={:.0}",
            freshness.len(),
            percentile(&freshness, 50.0),
            percentile(&freshness, 99.0),
            percentile(&freshness, 100.0)
        );
    }

    if !args.clickhouse_url.is_empty() {
        let last_post = Instant::now();
        let wait_deadline = last_post + Duration::from_secs(300);
        loop {
            let stored = match stored_events(&args).await {
                Ok(n) => n,
                Err(err) => {
                    eprintln!("cannot count stored events: {err}");
                    0
                }
            };
            if stored >= accepted {
                println!(
                    "visible_in_clickhouse_after_ms={}",
                    last_post.elapsed().as_millis()
                );
                break;
            }
            if Instant::now() > wait_deadline {
                println!("visible_in_clickhouse=incomplete stored={stored} accepted={accepted}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
