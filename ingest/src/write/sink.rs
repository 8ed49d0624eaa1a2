//! Where accepted events go: a small trait, so the HTTP layer can be tested alone, and its
//! Kafka implementation, which answers only once the broker has acknowledged every record.

use futures::future::{join_all, BoxFuture};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tally_runtime::kafka::KafkaConfig;

/// One record to publish: the partitioning key and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRecord {
    pub key: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The sink did not acknowledge every record in time (down, queue full, deadline passed);
    /// the same batch may succeed later (503 with `Retry-After`).
    #[error("event sink unavailable: {0}")]
    Unavailable(String),
    /// The sink refused a record for good (larger than the broker takes): resending the same
    /// batch cannot succeed (413).
    #[error("event sink refused a record: {0}")]
    Rejected(String),
}

impl SinkError {
    /// Kafka's error, classed: a record too large for the broker is refused for good, every
    /// other failure may pass on a later try.
    pub fn from_kafka(err: &KafkaError) -> Self {
        match err.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge,
            ) => Self::Rejected(err.to_string()),
            _ => Self::Unavailable(err.to_string()),
        }
    }
}

/// Publishes records durably. `publish` resolves `Ok` only when every record is stored.
pub trait EventSink: Send + Sync + 'static {
    fn publish(&self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<(), SinkError>>;

    /// Whether the sink can currently reach its backend.
    fn is_ready(&self) -> bool;

    /// Records accepted but not yet acknowledged by the backend.
    fn queue_len(&self) -> i64 {
        0
    }
}

/// Producer settings of ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// How long Kafka has to acknowledge a batch before ingest answers 503, in milliseconds.
    pub delivery_timeout_ms: u64,
    /// Most records waiting in the producer's queue; a full queue answers 503.
    pub queue_max_messages: u32,
    /// How long the producer waits to fill a Kafka batch, in milliseconds.
    pub linger_ms: u32,
    /// `Retry-After` sent with a 503, in seconds.
    pub retry_after_secs: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            delivery_timeout_ms: 5000,
            queue_max_messages: 200_000,
            linger_ms: 5,
            retry_after_secs: 2,
        }
    }
}

/// The Kafka sink: acks=all, idempotent, bounded queue, a delivery deadline.
///
/// Partitions are chosen here, as librdkafka's default partitioner would (CRC-32 of the key
/// modulo the partition count), but over at most `events_partitions` partitions: partitions
/// added to the topic later stay unused, so a session's events never move to another
/// partition and every session rollup stays exact.
pub struct KafkaSink {
    producer: Arc<FutureProducer>,
    topic: String,
    deadline: Duration,
    ready: Arc<AtomicBool>,
    /// The partitions records are spread over; 0 until the topic's metadata is known.
    partitions: Arc<AtomicI32>,
}

/// The partition of `key` among `partitions`: librdkafka's `consistent` partitioner.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    let hash = crc32fast::hash(key);
    i32::try_from(hash % u32::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or(0)
}

impl KafkaSink {
    pub fn new(kafka: &KafkaConfig, producer: &ProducerConfig) -> anyhow::Result<Self> {
        let mut config: ClientConfig = kafka.client_config();
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                producer.delivery_timeout_ms.to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                producer.queue_max_messages.to_string(),
            )
            .set("linger.ms", producer.linger_ms.to_string())
            .set("compression.type", "lz4");
        let producer_handle: Arc<FutureProducer> = Arc::new(config.create()?);
        let ready = Arc::new(AtomicBool::new(false));
        let partitions = Arc::new(AtomicI32::new(0));
        watch_readiness(
            Arc::downgrade(&producer_handle),
            kafka.events_topic.clone(),
            kafka.events_partitions,
            ready.clone(),
            partitions.clone(),
        );
        Ok(Self {
            producer: producer_handle,
            topic: kafka.events_topic.clone(),
            deadline: Duration::from_millis(producer.delivery_timeout_ms),
            ready,
            partitions,
        })
    }

    /// Waits for queued records to be delivered, up to `timeout` (used at shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(err) = self.producer.flush(timeout) {
            tracing::warn!(%err, "producer flush did not complete");
        }
    }
}

impl EventSink for KafkaSink {
    fn publish(&self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let mut deliveries = Vec::with_capacity(records.len());
            let partitions = self.partitions.load(Ordering::Relaxed);
            for record in &records {
                let mut future_record = FutureRecord::to(&self.topic)
                    .key(record.key.as_bytes())
                    .payload(record.payload.as_slice());
                if partitions > 0 {
                    future_record =
                        future_record.partition(partition_of(record.key.as_bytes(), partitions));
                }
                match self.producer.send_result(future_record) {
                    Ok(delivery) => deliveries.push(delivery),
                    // Queue full or producer failing: what was queued still goes out, and
                    // the client's resend is deduplicated downstream by event_id.
                    Err((err, _)) => return Err(SinkError::from_kafka(&err)),
                }
            }
            let grace = self.deadline + Duration::from_secs(1);
            let results = tokio::time::timeout(grace, join_all(deliveries))
                .await
                .map_err(|_| SinkError::Unavailable("delivery deadline passed".into()))?;
            for result in results {
                match result {
                    Ok(Ok(_)) => {}
                    Ok(Err((err, _))) => return Err(SinkError::from_kafka(&err)),
                    Err(_) => return Err(SinkError::Unavailable("delivery cancelled".into())),
                }
            }
            Ok(())
        })
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn queue_len(&self) -> i64 {
        i64::from(self.producer.in_flight_count())
    }
}

/// Polls the cluster's metadata every two seconds on a thread of its own and records
/// whether the event topic is reachable, and over how many partitions to spread records: the
/// topic's, but never more than `configured`. The thread ends with the producer.
fn watch_readiness(
    producer: Weak<FutureProducer>,
    topic: String,
    configured: i32,
    ready: Arc<AtomicBool>,
    partitions: Arc<AtomicI32>,
) {
    let spawned = std::thread::Builder::new()
        .name("kafka-readiness".into())
        .spawn(move || {
            let mut warned = false;
            while let Some(producer) = producer.upgrade() {
                let found = producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(2))
                    .ok()
                    .and_then(|m| {
                        m.topics()
                            .iter()
                            .find(|t| t.name() == topic && t.error().is_none())
                            .map(|t| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
                    });
                if let Some(count) = found.filter(|c| *c > 0) {
                    if count > configured && !warned {
                        warned = true;
                        tracing::warn!(
                            topic,
                            count,
                            configured,
                            "the event topic has more partitions than events_partitions; the extra ones stay unused"
                        );
                    }
                    partitions.store(count.min(configured.max(1)), Ordering::Relaxed);
                }
                ready.store(found.is_some(), Ordering::Relaxed);
                drop(producer);
                std::thread::sleep(Duration::from_secs(2));
            }
        });
    if let Err(err) = spawned {
        tracing::error!(%err, "cannot start the Kafka readiness thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    const TOPIC: &str = "events";

    fn sink(mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>) -> KafkaSink {
        let kafka = KafkaConfig {
            brokers: mock.bootstrap_servers(),
            events_topic: TOPIC.into(),
            events_partitions: 1,
            ..KafkaConfig::default()
        };
        let producer = ProducerConfig {
            delivery_timeout_ms: 2_000,
            ..ProducerConfig::default()
        };
        KafkaSink::new(&kafka, &producer).expect("sink")
    }

    fn record() -> SinkRecord {
        SinkRecord {
            key: "p:s".into(),
            payload: b"{}".to_vec(),
        }
    }

    #[tokio::test]
    async fn kafka_errors_map_to_retry_later_or_refused_for_good() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic(TOPIC, 1, 1).expect("topic");
        let sink = sink(&mock);
        assert_eq!(sink.publish(vec![record()]).await, Ok(()));

        // The broker says the record is too large: no later try can pass.
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        );
        let refused = sink.publish(vec![record()]).await;
        assert!(
            matches!(refused, Err(SinkError::Rejected(_))),
            "{refused:?}"
        );

        // The broker is gone: the delivery deadline passes, a later try may pass.
        mock.clear_request_errors(RDKafkaApiKey::Produce);
        mock.broker_down(1).expect("broker down");
        let down = sink.publish(vec![record()]).await;
        assert!(matches!(down, Err(SinkError::Unavailable(_))), "{down:?}");
    }
}
