//! Records the aggregator cannot fold go to the dead-letter topic, unchanged, with headers
//! saying why and where they came from; folding goes on without them.

use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::Duration;
use tally_runtime::kafka::KafkaConfig;

pub const REASON_HEADER: &str = "tally-reason";
pub const SOURCE_HEADER: &str = "tally-source";

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(kafka: &KafkaConfig) -> anyhow::Result<Self> {
        let producer = kafka
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "10000")
            .create()?;
        Ok(Self {
            producer,
            topic: kafka.dead_letter_topic.clone(),
        })
    }

    /// Publishes `message` with `reason` and waits for Kafka to acknowledge it.
    pub async fn send(&self, message: &OwnedMessage, reason: &str) -> anyhow::Result<()> {
        let source = format!(
            "{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: REASON_HEADER,
                value: Some(reason),
            })
            .insert(Header {
                key: SOURCE_HEADER,
                value: Some(&source),
            });
        let mut record = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(err, _)| anyhow::anyhow!("dead-letter produce failed: {err}"))
    }

    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
