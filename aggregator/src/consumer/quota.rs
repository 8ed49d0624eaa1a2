//! The aggregator's side of quotas in the consumer loop: counters restarted from ClickHouse
//! when a partition is taken, folded and published after each batch, and spent ones removed.

use super::Aggregator;
use std::time::Duration;
use tally_quota::QuotaDelta;
use tally_quota::{CounterRecord, QuotaRecord, WindowStarts, MINUTE_SLOTS};
use tally_runtime::backoff::{retry, After, Backoff};
use tally_schema::rollups::Granularity;

impl Aggregator {
    /// Folds a written batch's quota deltas into the counters and publishes the changed ones;
    /// once a minute also removes spent counters (tombstones on the quota topic).
    pub(super) async fn update_quota(&mut self, deltas: &[QuotaDelta]) -> anyhow::Result<()> {
        let now_ms = tally_quota::now_ms();
        let counters = self.ledger.fold(deltas, now_ms);
        let refused = &self.metrics.quota_refused_accounts;
        refused.inc_by(self.ledger.refused().saturating_sub(refused.get()));
        self.publish_counters(counters).await?;
        let spent = self.ledger.take_spent(now_ms);
        if !spent.is_empty() {
            // A spent counter counts nothing: a lost tombstone only leaves a harmless record.
            match self
                .publisher
                .send_tombstones(&self.config.kafka.quota_topic, &spent)
                .await
            {
                Ok(()) => tracing::info!(accounts = spent.len(), "spent quota counters removed"),
                Err(err) => tracing::warn!(%err, "cannot remove spent quota counters"),
            }
        }
        Ok(())
    }

    /// Starts a partition's quota counters from ClickHouse and publishes them.
    pub(super) async fn restore_quota(&mut self, partition: i32) -> anyhow::Result<()> {
        let now_ms = tally_quota::now_ms();
        let w = WindowStarts::at(now_ms);
        let store = &self.store;
        let daily = self
            .retry("load quota days", || {
                store.partition_usage_since(Granularity::Day, partition, w.month)
            })
            .await?;
        let hourly = self
            .retry("load quota hour", || {
                store.partition_usage_since(Granularity::Hour, partition, w.hour)
            })
            .await?;
        let since = now_ms.div_euclid(1000) - MINUTE_SLOTS;
        let seconds = self
            .retry("load quota minute", || {
                store.partition_recent_seconds(partition, since)
            })
            .await?;
        let counters = self
            .ledger
            .restore(partition, daily, hourly, seconds, now_ms);
        tracing::info!(
            partition,
            accounts = counters.len(),
            "quota counters restored"
        );
        self.publish_counters(counters).await
    }

    /// Publishes counters to the quota topic, retrying until Kafka has them (offsets are
    /// committed only after, so a crash before replays the batch and publishes again).
    async fn publish_counters(&self, counters: Vec<CounterRecord>) -> anyhow::Result<()> {
        if counters.is_empty() {
            return Ok(());
        }
        let records: Vec<(String, Vec<u8>)> = counters
            .into_iter()
            .map(|c| {
                let record = QuotaRecord::Counters(c);
                (record.key(), record.to_json())
            })
            .collect();
        let count = records.len() as u64;
        let topic = &self.config.kafka.quota_topic;
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        retry(
            backoff,
            || self.publisher.send_all(topic, records.clone()),
            |err, _, _| {
                self.metrics.quota_publish_failures.inc();
                tracing::warn!(%err, "quota topic unavailable; retrying");
                if self.stopping() {
                    After::GiveUp
                } else {
                    After::Retry
                }
            },
        )
        .await?;
        self.metrics.quota_published.inc_by(count);
        Ok(())
    }
}
