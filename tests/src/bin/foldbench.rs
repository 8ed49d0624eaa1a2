//! tally-foldbench: how fast the aggregator folds, next to how fast ClickHouse takes the same
//! raw rows inserted directly. Produces a seeded workload to a fresh topic, starts the
//! aggregator binary beside this one, times it until every event is stored, then inserts the
//! same event rows straight into a fresh `events` table. Used by `make bench`.

use clap::Parser;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tally_runtime::clickhouse::ClickHouseConfig;
use tally_schema::rows::EventRow;
use tally_tests::processes::{phase_times, terminate, FoldStage};
use tally_tests::replay::Replay;

#[derive(Debug, Parser)]
#[command(name = "tally-foldbench")]
struct Args {
    /// Sessions in the workload (about ten events each).
    #[arg(long, default_value_t = 30_000)]
    sessions: usize,
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// The aggregator's batch size.
    #[arg(long, default_value_t = 20_000)]
    batch: usize,
    /// The aggregator's `max_known_keys` (0 turns off its filter of rows that cannot exist,
    /// to compare); its default when not given.
    #[arg(long)]
    max_known_keys: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let replay = Replay::generate(42, "bench", args.sessions, 50);
    let mut stage = FoldStage::new(args.partitions).await;
    stage.batch_max_events = args.batch;
    if let Some(keys) = args.max_known_keys {
        stage
            .extra_env
            .push(("TALLY_MAX_KNOWN_KEYS".into(), keys.to_string()));
    }
    let records = replay.records.len();

    let started = Instant::now();
    stage.produce(&replay.records, 5_000, Duration::ZERO).await;
    let produce_secs = started.elapsed().as_secs_f64();
    println!(
        "records={records} unique_events={} sessions={}",
        replay.truth.unique_events, args.sessions
    );
    println!(
        "produce_records_per_sec={:.0}",
        records as f64 / produce_secs
    );

    let client = stage.clickhouse.client();
    let started = Instant::now();
    let health = format!("127.0.0.1:{}", tally_tests::private_stack::free_port());
    let mut aggregator = stage.spawn_listening("bench", Some("bench-0"), &health);
    let mut stored = 0;
    while stored < replay.truth.unique_events && started.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = client
            .query("SELECT count() FROM events")
            .fetch_one()
            .await
            .unwrap_or(0);
    }
    let fold_secs = started.elapsed().as_secs_f64();
    let metrics = match reqwest::get(format!("http://{health}/metrics")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    terminate(&mut aggregator);
    anyhow::ensure!(
        stored >= replay.truth.unique_events,
        "folding did not finish: {stored} stored"
    );
    println!("aggregator_time_by_phase {}", phase_times(&metrics));
    let reading = stage.read("bench", "usage_hourly").await;
    println!("fold_secs={fold_secs:.2} (includes the aggregator's start)");
    println!("fold_records_per_sec={:.0}", records as f64 / fold_secs);
    println!("totals_match_ground_truth={}", reading == replay.truth);

    // The same unique event rows, inserted directly in batches of the same size.
    let raw = ClickHouseConfig {
        database: format!("{}_raw", stage.clickhouse.database),
        ..stage.clickhouse.clone()
    };
    tally_runtime::migrate::run(&raw).await?;
    let mut seen = HashSet::new();
    let rows: Vec<EventRow> = replay
        .records
        .iter()
        .enumerate()
        .filter(|(_, e)| seen.insert(e.event.event_id.clone()))
        .map(|(i, e)| EventRow::from_envelope(e, 0, i as u64))
        .collect();
    let raw_client = raw.client();
    let started = Instant::now();
    for chunk in rows.chunks(args.batch) {
        let mut insert = raw_client.insert::<EventRow>("events").await?;
        for row in chunk {
            insert.write(row).await?;
        }
        insert.end().await?;
    }
    let raw_secs = started.elapsed().as_secs_f64();
    let raw_rate = rows.len() as f64 / raw_secs;
    println!("raw_insert_rows_per_sec={raw_rate:.0}");
    println!(
        "fold_as_fraction_of_raw_insert={:.2}",
        (replay.truth.unique_events as f64 / fold_secs) / raw_rate
    );

    let _ = raw
        .server_client()
        .query(&format!("DROP DATABASE IF EXISTS {}", raw.database))
        .execute()
        .await;
    stage.remove().await;
    Ok(())
}
