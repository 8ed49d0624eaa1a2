//! Kafka connection settings shared by producers and consumers, and topic creation.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where Kafka is and which topic carries events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma separated.
    pub brokers: String,
    /// The event topic.
    pub events_topic: String,
    /// Where the aggregator puts records it cannot fold, with the reason in a header.
    pub dead_letter_topic: String,
    /// The compacted topic of quota counters and account settings every ingest replica follows.
    pub quota_topic: String,
    /// Where the aggregator emits one alert per account, limit, window and threshold crossed.
    pub alerts_topic: String,
    /// Partitions of the event topic when Tally creates it.
    pub events_partitions: i32,
    /// Replication factor of the event topic when Tally creates it.
    pub replication_factor: i32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            events_topic: "tally.events.v1".into(),
            dead_letter_topic: "tally.events.dlq.v1".into(),
            quota_topic: "tally.quota.v1".into(),
            alerts_topic: "tally.alerts.v1".into(),
            events_partitions: 6,
            replication_factor: 1,
        }
    }
}

impl KafkaConfig {
    /// Base client settings; callers add producer or consumer settings on top.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "tally")
            .set("log_level", "4");
        config
    }

    /// Creates the event, dead-letter, quota (compacted) and alert topics unless they exist.
    pub async fn ensure_topics(&self) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let replication = || TopicReplication::Fixed(self.replication_factor);
        let topics = [
            NewTopic::new(&self.events_topic, self.events_partitions, replication()),
            NewTopic::new(&self.dead_letter_topic, 1, replication()),
            // One partition: every reader wants all of it, and it holds one record per key.
            NewTopic::new(&self.quota_topic, 1, replication())
                .set("cleanup.policy", "compact")
                .set("min.compaction.lag.ms", "60000"),
            NewTopic::new(&self.alerts_topic, 1, replication()),
        ];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin.create_topics(&topics, &options).await?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
            }
        }
        Ok(())
    }
}
