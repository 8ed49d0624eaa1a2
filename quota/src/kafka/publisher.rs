//! An idempotent producer (acks=all) for the quota and alert topics; `send` returns once
//! Kafka has the record.

use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;
use tally_runtime::kafka::KafkaConfig;

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    pub fn new(kafka: &KafkaConfig, delivery_timeout: Duration) -> anyhow::Result<Self> {
        let producer = kafka
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().to_string(),
            )
            .create()?;
        Ok(Self { producer })
    }

    /// Sends one record and waits for Kafka's acknowledgement.
    pub async fn send(&self, topic: &str, key: &str, payload: &[u8]) -> anyhow::Result<()> {
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(0),
            )
            .await
            .map(|_| ())
            .map_err(|(err, _)| anyhow::anyhow!("cannot publish to {topic}: {err}"))
    }

    /// Sends a tombstone (a key without payload) for each key, concurrently; returns once all
    /// are acknowledged, or the first failure. Compaction then drops those keys.
    pub async fn send_tombstones(&self, topic: &str, keys: &[String]) -> anyhow::Result<()> {
        let sends = keys.iter().map(|key| {
            self.producer.send(
                FutureRecord::<str, [u8]>::to(topic).key(key.as_str()),
                Duration::from_secs(0),
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(err, _)| anyhow::anyhow!("cannot publish to {topic}: {err}"))?;
        }
        Ok(())
    }

    /// Sends records concurrently; returns once all are acknowledged, or the first failure.
    pub async fn send_all(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let sends: Vec<_> = records
            .into_iter()
            .map(|(key, payload)| {
                let producer = self.producer.clone();
                let topic = topic.to_owned();
                async move {
                    producer
                        .send(
                            FutureRecord::to(&topic).key(&key).payload(&payload),
                            Duration::from_secs(0),
                        )
                        .await
                        .map(|_| ())
                        .map_err(|(err, _)| anyhow::anyhow!("cannot publish to {topic}: {err}"))
                }
            })
            .collect();
        for result in futures::future::join_all(sends).await {
            result?;
        }
        Ok(())
    }
}
