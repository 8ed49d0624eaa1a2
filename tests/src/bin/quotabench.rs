//! Quota check benchmark: fills a running ingest's quota view with accounts through its Kafka
//! topic, measures the memory that took, then drives `POST /v1/quota/check` over HTTP at a
//! fixed rate (latency measured from each request's scheduled start, so a stall counts for
//! every request it delays) and as fast as it answers.

use clap::Parser;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_quota::Publisher;
use tally_quota::{AccountSettings, CounterRecord, PlanLimits, QuotaRecord};
use tally_runtime::kafka::KafkaConfig;
use tally_tests::processes::memory_kib;

#[derive(Debug, Parser)]
struct Cli {
    #[arg(long)]
    url: String,
    #[arg(long)]
    key: String,
    #[arg(long)]
    project: String,
    /// The ingest process, to read its resident memory.
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    quota_topic: String,
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Checks per second of the fixed-rate phase.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Connections (each with one request in flight).
    #[arg(long, default_value_t = 64)]
    connections: usize,
}

async fn view_accounts(http: &reqwest::Client, url: &str) -> u64 {
    let Ok(response) = http.get(format!("{url}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("tally_ingest_quota_view_accounts "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Publishes each account's plan and one counter record per partition (of 6).
async fn fill(cli: &Cli) -> anyhow::Result<()> {
    let kafka = KafkaConfig {
        brokers: cli.brokers.clone(),
        ..KafkaConfig::default()
    };
    let publisher = Publisher::new(&kafka, Duration::from_secs(30))?;
    let now = chrono::Utc::now().timestamp_millis();
    let plans = ["free", "pro", "enterprise"];
    let mut records = Vec::new();
    for i in 0..cli.accounts {
        let account = format!("account-{i}");
        let settings = QuotaRecord::Settings {
            project_id: cli.project.clone(),
            account_id: account.clone(),
            settings: AccountSettings {
                plan: Some(plans[i % 3].to_owned()),
                overrides: PlanLimits::default(),
            },
            updated_at_ms: now,
        };
        records.push((settings.key(), settings.to_json()));
        for partition in 0..6 {
            let mut counters = CounterRecord::new(&cli.project, &account, partition);
            counters.add(now, 100 + i as i64, 1_000, 1, now);
            let record = QuotaRecord::Counters(counters);
            records.push((record.key(), record.to_json()));
        }
    }
    for chunk in records.chunks(5_000) {
        publisher.send_all(&cli.quota_topic, chunk.to_vec()).await?;
    }
    Ok(())
}

/// Ingest's own request-duration histogram of the check route: (upper bound s, count).
async fn server_buckets(http: &reqwest::Client, url: &str) -> Vec<(String, u64)> {
    let Ok(response) = http.get(format!("{url}/metrics")).send().await else {
        return Vec::new();
    };
    let text = response.text().await.unwrap_or_default();
    let prefix =
        "tally_ingest_http_request_duration_seconds_bucket{route=\"/v1/quota/check\",le=\"";
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

/// The share of the checks between two scrapes that ingest answered within each bound.
fn server_report(before: &[(String, u64)], after: &[(String, u64)]) {
    let total = after.last().map_or(0, |b| b.1) - before.last().map_or(0, |b| b.1);
    let shares: Vec<String> = after
        .iter()
        .zip(before)
        .filter(|(a, _)| ["0.0005", "0.001", "0.002"].contains(&a.0.as_str()))
        .map(|(a, b)| {
            format!(
                "le_{}s={:.4}",
                a.0,
                (a.1 - b.1) as f64 / total.max(1) as f64
            )
        })
        .collect();
    println!(
        "  inside ingest (request read to answer written): {}",
        shares.join(" ")
    );
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Runs checks for `duration`; with `rate`, each connection keeps its share of a fixed
/// schedule. Returns latencies in µs and the non-200 count.
async fn drive(cli: &Arc<Cli>, rate: Option<u64>, duration: Duration) -> (Vec<u64>, u64, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..cli.connections {
        let cli = cli.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let interval = rate.map(|r| Duration::from_secs_f64(cli.connections as f64 / r as f64));
            let mut next = started
                + interval
                    .map(|i| i.mul_f64(c as f64 / cli.connections as f64))
                    .unwrap_or_default();
            let (mut latencies, mut failed) = (Vec::new(), 0u64);
            while started.elapsed() < duration {
                if interval.is_some() {
                    tokio::time::sleep_until(next.into()).await;
                }
                let scheduled = if interval.is_some() {
                    next
                } else {
                    Instant::now()
                };
                let body = serde_json::json!({
                    "account_id": format!("account-{}", rng.random_range(0..cli.accounts)),
                    "model": "gpt-4o-mini",
                    "operation": "chat",
                    "estimated_tokens": rng.random_range(100..2000),
                });
                let answer = http
                    .post(format!("{}/v1/quota/check", cli.url))
                    .bearer_auth(&cli.key)
                    .json(&body)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => failed += 1,
                }
                latencies.push(u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX));
                if let Some(interval) = interval {
                    next += interval;
                }
            }
            (latencies, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for task in tasks {
        if let Ok((latencies, f)) = task.await {
            all.extend(latencies);
            failed += f;
        }
    }
    all.sort_unstable();
    (all, failed, started.elapsed())
}

fn report(name: &str, latencies: &[u64], failed: u64, elapsed: Duration) {
    println!(
        "{name}: checks={} checks_per_sec={:.0} failed={failed} latency_ms p50={:.3} p99={:.3} p999={:.3} max={:.3}",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(latencies, 50.0),
        percentile(latencies, 99.0),
        percentile(latencies, 99.9),
        percentile(latencies, 100.0),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Arc::new(Cli::parse());
    let http = reqwest::Client::new();
    let before = memory_kib(cli.pid, "VmRSS")?;
    let base = view_accounts(&http, &cli.url).await;
    fill(&cli).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while view_accounts(&http, &cli.url).await < base + cli.accounts as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the view never held every account"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = memory_kib(cli.pid, "VmRSS")?;
    println!(
        "view: accounts={} partitions_per_account=6 rss_before_mib={:.1} rss_after_mib={:.1} bytes_per_account={:.0}",
        cli.accounts,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before) * 1024) as f64 / cli.accounts as f64
    );
    // Warm the connections and the allocator.
    let _ = drive(&cli, None, Duration::from_secs(2)).await;
    let duration = Duration::from_secs(cli.duration_secs);
    let before = server_buckets(&http, &cli.url).await;
    let (latencies, failed, elapsed) = drive(&cli, Some(cli.rate), duration).await;
    report(
        &format!("fixed rate {}/s", cli.rate),
        &latencies,
        failed,
        elapsed,
    );
    let after = server_buckets(&http, &cli.url).await;
    server_report(&before, &after);
    let (latencies, failed, elapsed) = drive(&cli, None, duration).await;
    report("as fast as answered", &latencies, failed, elapsed);
    server_report(&after, &server_buckets(&http, &cli.url).await);
    Ok(())
}
