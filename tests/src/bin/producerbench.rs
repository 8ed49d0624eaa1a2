//! tally-producerbench: the rate at which a bare rdkafka producer, configured as ingest's
//! (acks=all, idempotent, lz4, linger 5 ms), gets the same event records acknowledged by the
//! same broker, with no HTTP in front: the ceiling for ingest's write path. Used by `make bench`.

use chrono::Utc;
use clap::Parser;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};
use tally_runtime::kafka::KafkaConfig;
use tally_schema::envelope::Envelope;
use tally_schema::event::Event;
use tally_tests::workload::Workload;

#[derive(Debug, Parser)]
#[command(name = "tally-producerbench")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// How long to produce, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Records awaited together (like one ingest batch).
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kafka = KafkaConfig {
        brokers: args.brokers.clone(),
        events_topic: format!("tally.bench.producer.{}", uuid::Uuid::new_v4().simple()),
        dead_letter_topic: format!("tally.bench.producer.dlq.{}", uuid::Uuid::new_v4().simple()),
        ..KafkaConfig::default()
    };
    kafka.ensure_topics().await?;
    let producer: FutureProducer = kafka
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .create()?;

    // The same records ingest would publish: realistic events in their envelopes.
    let mut workload = Workload::new(1, Utc::now());
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    let mut session = 0;
    while records.len() < 50_000 {
        session += 1;
        for value in workload.session(session, &format!("acct-{}", session % 50)) {
            let event: Event = serde_json::from_value(value)?;
            let envelope = Envelope::new("bench", Utc::now().timestamp_millis(), event);
            records.push((envelope.key(), envelope.encode()));
        }
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let mut sent = 0usize;
    // Eight batches in flight at once, like the load generator's eight connections.
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut cursor = 0;
    while Instant::now() < deadline {
        while in_flight.len() < 8 {
            let mut deliveries = Vec::with_capacity(args.batch_size);
            for _ in 0..args.batch_size {
                let (key, payload) = &records[cursor % records.len()];
                cursor += 1;
                let record = FutureRecord::to(&kafka.events_topic)
                    .key(key)
                    .payload(payload);
                deliveries.push(producer.send_result(record).map_err(|(err, _)| err)?);
            }
            in_flight.push(futures::future::join_all(deliveries));
        }
        if let Some(batch) = futures::StreamExt::next(&mut in_flight).await {
            for delivery in batch {
                if matches!(delivery, Ok(Ok(_))) {
                    sent += 1;
                }
            }
        }
    }
    while let Some(batch) = futures::StreamExt::next(&mut in_flight).await {
        sent += batch.into_iter().filter(|d| matches!(d, Ok(Ok(_)))).count();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "raw_producer batch_size={} acknowledged={sent} records_per_sec={:.0}",
        args.batch_size,
        sent as f64 / secs
    );

    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        kafka.client_config().create()?;
    let _ = admin
        .delete_topics(
            &[&kafka.events_topic, &kafka.dead_letter_topic],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await;
    Ok(())
}
