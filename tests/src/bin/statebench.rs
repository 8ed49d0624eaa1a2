//! tally-statebench: the memory of tally-ingest and tally-aggregator (release processes)
//! while a workload of many distinct sessions and accounts goes through them. Every event is
//! an `llm_response` in a session of its own; accounts repeat round-robin, spread over a few
//! projects (each under `[quota.accounts] per_project`). Events are posted to ingest in
//! batches; the aggregator folds them and publishes the accounts' quota counters, which every
//! ingest replica follows into its view. Both processes' resident memory is sampled every
//! second; the run ends once ClickHouse holds every event and ingest's view every account.

use clap::Parser;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_tests::private_stack::free_port;
use tally_tests::processes::{
    memory_kib, phase_times, service_command, terminate, FoldStage, KillOnDrop,
};
use tally_tests::workload::batch_body;

#[derive(Debug, Parser)]
#[command(name = "tally-statebench")]
struct Args {
    /// Distinct sessions, one event each.
    #[arg(long, default_value_t = 10_000_000)]
    sessions: u64,
    /// Distinct accounts, over all projects.
    #[arg(long, default_value_t = 1_000_000)]
    accounts: u64,
    /// Projects the accounts are spread over.
    #[arg(long, default_value_t = 4)]
    projects: u64,
    /// Events per posted batch.
    #[arg(long, default_value_t = 1_000)]
    batch: u64,
    /// Connections posting at once.
    #[arg(long, default_value_t = 8)]
    connections: u64,
    /// The aggregator's `max_known_keys` (0 turns off its filter of rows that cannot exist,
    /// to compare); its default when not given.
    #[arg(long)]
    max_known_keys: Option<usize>,
    /// The aggregator's `max_cached_rows`; its default when not given.
    #[arg(long)]
    max_cached_rows: Option<usize>,
}

/// The highest resident memory seen of a process, in KiB.
#[derive(Default)]
struct Peak(AtomicU64);

impl Peak {
    fn sample(&self, pid: u32) {
        if let Ok(kib) = memory_kib(pid, "VmRSS") {
            self.0.fetch_max(kib, Ordering::Relaxed);
        }
    }

    fn mib(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

fn mib(pid: u32) -> f64 {
    memory_kib(pid, "VmRSS").unwrap_or(0) as f64 / 1024.0
}

/// The key of project `p{project}` (one key each; a key belongs to one project).
fn project_key(key: &str, project: u64) -> String {
    format!("{key}-{project}")
}

fn spawn_ingest(stage: &FoldStage, args: &Args, listen: &str) -> anyhow::Result<(Child, String)> {
    let key = format!("statebench-{}", uuid::Uuid::new_v4().simple());
    let mut config = format!(
        "listen = \"{listen}\"\n[rate_limit]\nrequests_per_second = 0.0\nevents_per_second = 0.0\n"
    );
    for project in 0..args.projects {
        let hash = hex::encode(Sha256::digest(project_key(&key, project).as_bytes()));
        config.push_str(&format!(
            "[[projects]]\nid = \"p{project}\"\nkeys = [{{ sha256 = \"{hash}\", scopes = [\"ingest\", \"read\"] }}]\n"
        ));
    }
    let path = stage.log_dir.join("ingest.toml");
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(stage.log_dir.join("ingest.log"))?;
    let child = service_command("tally-ingest")
        .arg("--config")
        .arg(&path)
        .env("TALLY_KAFKA__BROKERS", &stage.kafka.brokers)
        .env("TALLY_KAFKA__EVENTS_TOPIC", &stage.kafka.events_topic)
        .env("TALLY_KAFKA__QUOTA_TOPIC", &stage.kafka.quota_topic)
        .env("TALLY_KAFKA__ALERTS_TOPIC", &stage.kafka.alerts_topic)
        .env("TALLY_CLICKHOUSE__URL", &stage.clickhouse.url)
        .env("TALLY_CLICKHOUSE__DATABASE", &stage.clickhouse.database)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok((child, key))
}

/// The `n`-th event of a project: a session of its own, accounts round-robin.
fn event(project: u64, n: u64, accounts_per_project: u64, now: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "type": "llm_response",
        "timestamp": now,
        "session_id": format!("session-{project}-{n:010}"),
        "account_id": format!("account-{:08}", n % accounts_per_project),
        "model": "gpt-4o-mini",
        "provider": "openai",
        "operation": "chat",
        "duration_ms": 420,
        "usage": {"input_tokens": 100, "output_tokens": 20},
    })
}

/// A metric's value in a `/metrics` text.
fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A value of ingest's or the aggregator's `/metrics`.
async fn metric(http: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    metric_in(&text, name)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.projects > 0 && args.accounts >= args.projects);
    anyhow::ensure!(
        args.sessions / args.batch / args.projects * args.batch >= args.accounts / args.projects,
        "too few sessions for every account to get one"
    );
    let mut stage = FoldStage::new(6).await;
    stage.batch_max_events = 20_000;
    if let Some(keys) = args.max_known_keys {
        stage
            .extra_env
            .push(("TALLY_MAX_KNOWN_KEYS".into(), keys.to_string()));
    }
    if let Some(rows) = args.max_cached_rows {
        stage
            .extra_env
            .push(("TALLY_MAX_CACHED_ROWS".into(), rows.to_string()));
    }
    let aggregator_listen = format!("127.0.0.1:{}", free_port());
    let ingest_listen = format!("127.0.0.1:{}", free_port());
    let aggregator = KillOnDrop(stage.spawn_listening("aggregator", None, &aggregator_listen));
    let (ingest, key) = spawn_ingest(&stage, &args, &ingest_listen)?;
    let ingest = KillOnDrop(ingest);
    let (aggregator_pid, ingest_pid) = (aggregator.0.id(), ingest.0.id());
    let http = reqwest::Client::new();
    let ingest_url = format!("http://{ingest_listen}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while http
        .get(format!("{ingest_url}/readyz"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        anyhow::ensure!(Instant::now() < deadline, "ingest did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start_mib = (mib(ingest_pid), mib(aggregator_pid));

    let (ingest_peak, aggregator_peak) = (Arc::new(Peak::default()), Arc::new(Peak::default()));
    let sampler = {
        let (ingest_peak, aggregator_peak) = (ingest_peak.clone(), aggregator_peak.clone());
        tokio::spawn(async move {
            loop {
                ingest_peak.sample(ingest_pid);
                aggregator_peak.sample(aggregator_pid);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // Batches are taken in order by the connections; batch b is project b % projects's, so
    // each project gets every projects-th batch and accounts / projects accounts.
    let args = Arc::new(args);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut posters = Vec::new();
    for _ in 0..args.connections {
        let (args, next, http, key, url) = (
            args.clone(),
            next.clone(),
            http.clone(),
            key.clone(),
            format!("{ingest_url}/v1/batch"),
        );
        posters.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(args.batch, Ordering::Relaxed);
                if first >= args.sessions {
                    return Ok::<(), anyhow::Error>(());
                }
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let last = (first + args.batch).min(args.sessions);
                let batch = first / args.batch;
                let project = batch % args.projects;
                let start = batch / args.projects * args.batch;
                let events: Vec<Value> = (0..last - first)
                    .map(|j| event(project, start + j, args.accounts / args.projects, &now))
                    .collect();
                let answer = http
                    .post(&url)
                    .bearer_auth(project_key(&key, project))
                    .json(&batch_body(&events))
                    .send()
                    .await?;
                anyhow::ensure!(
                    answer.status().is_success(),
                    "ingest answered {}",
                    answer.status()
                );
                let body: Value = answer.json().await?;
                anyhow::ensure!(
                    body["accepted"].as_u64() == Some(last - first),
                    "not all accepted: {body}"
                );
            }
        }));
    }
    for poster in posters {
        poster.await??;
    }
    let post_secs = started.elapsed().as_secs_f64();

    let client = stage.clickhouse.client();
    let metrics_url = format!("{ingest_url}/metrics");
    let (mut stored, mut view_accounts) = (0u64, 0.0);
    let deadline = Instant::now() + Duration::from_secs(3600);
    while (stored < args.sessions || view_accounts < args.accounts as f64)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
        stored = client
            .query("SELECT count() FROM events")
            .fetch_one()
            .await
            .unwrap_or(stored);
        view_accounts = metric(&http, &metrics_url, "tally_ingest_quota_view_accounts")
            .await
            .unwrap_or(view_accounts);
    }
    let done_secs = started.elapsed().as_secs_f64();
    sampler.abort();
    ingest_peak.sample(ingest_pid);
    aggregator_peak.sample(aggregator_pid);
    let sessions: u64 = client
        .query("SELECT uniqExact(session_id) FROM sessions")
        .fetch_one()
        .await?;
    let aggregator_metrics = http
        .get(format!("http://{aggregator_listen}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let refused = metric_in(
        &aggregator_metrics,
        "tally_aggregator_quota_refused_accounts_total",
    );
    println!(
        "sessions={} accounts={} projects={} events_stored={stored} sessions_stored={sessions} view_accounts={view_accounts} refused_accounts={refused:?}",
        args.sessions, args.accounts, args.projects
    );
    println!(
        "posted_events_per_sec={:.0} post_secs={post_secs:.0} all_folded_secs={done_secs:.0}",
        args.sessions as f64 / post_secs
    );
    println!(
        "ingest_rss_mib start={:.0} peak={:.0} end={:.0} bytes_per_account={:.0}",
        start_mib.0,
        ingest_peak.mib(),
        mib(ingest_pid),
        (mib(ingest_pid) - start_mib.0) * 1_048_576.0 / args.accounts as f64
    );
    println!(
        "aggregator_rss_mib start={:.0} peak={:.0} end={:.0}",
        start_mib.1,
        aggregator_peak.mib(),
        mib(aggregator_pid)
    );
    println!(
        "aggregator_time_by_phase {}",
        phase_times(&aggregator_metrics)
    );
    let (mut aggregator, mut ingest) = (aggregator, ingest);
    terminate(&mut ingest.0);
    terminate(&mut aggregator.0);
    anyhow::ensure!(
        stored == args.sessions && sessions == args.sessions,
        "not every event folded"
    );
    stage.remove().await;
    Ok(())
}
