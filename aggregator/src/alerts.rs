//! Threshold alerts. Every aggregator replica follows `tally.quota.v1` (all partitions'
//! counters and every account's settings) and `tally.alerts.v1` (the alerts already emitted).
//! An account's alerts are emitted by the replica that owns the events partition its
//! (project, account) hashes to, so one replica decides for each account.
//!
//! Exactly once: an alert's id is derived from (project, account, limit, window start,
//! threshold); the replica emits it only if the alerts topic, read to its end, does not hold
//! it yet, and records it there first (acks=all, idempotent producer), then in the
//! `quota_alerts` table, then calls the webhook. A crash after Kafka took the alert leaves it
//! in the topic, so the next owner skips it.

use crate::config::AlertsConfig;
use crate::metrics::Metrics;
use crate::store::Store;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tally_quota::{evaluate, CheckRequest, LimitStatus, QuotaConfig, WindowStarts};
use tally_quota::{Follower, Publisher, QuotaView};
use tally_runtime::backoff::{retry, After, Backoff};
use tally_runtime::kafka::KafkaConfig;
use tokio::sync::watch;

/// One alert: the record of the alerts topic, the webhook body and a `quota_alerts` row.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub project_id: String,
    pub account_id: String,
    pub plan: String,
    pub limit_name: String,
    pub window: String,
    pub window_start: u32,
    /// `warning`, `critical` or `exceeded`.
    pub threshold: String,
    pub threshold_percent: u16,
    /// Tokens, or nano-USD for the cost limit.
    pub limit_value: u64,
    pub used: u64,
    pub emitted_at: u32,
}

/// Where an account stands against one limit: a `quota_status` row.
#[derive(Debug, Clone, Row, Serialize)]
struct StatusRow {
    project_id: String,
    account_id: String,
    plan: String,
    limit_name: String,
    window: String,
    window_start: u32,
    limit_value: u64,
    used: u64,
    status: String,
    updated_at: u32,
    version: u64,
}

/// The events partition whose owner alerts for an account (FNV-1a, stable across builds).
pub fn owner_partition(project_id: &str, account_id: &str, partitions: i32) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in project_id.bytes().chain([0x1f]).chain(account_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i32::try_from(hash % u64::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or(0)
}

fn alert_id(
    project: &str,
    account: &str,
    limit: &str,
    window_start: i64,
    threshold: &str,
) -> String {
    let identity =
        format!("{project}\u{1f}{account}\u{1f}{limit}\u{1f}{window_start}\u{1f}{threshold}");
    hex::encode(&Sha256::digest(identity.as_bytes())[..16])
}

const DAY_SECS: i64 = 86_400;

/// The alerts already emitted (ids with their window's start), so each is emitted once.
/// Windows that started more than a day before this month are over and forgotten whenever
/// new alerts go out, so the set holds at most accounts × limits × thresholds × the windows
/// of about a month.
#[derive(Debug, Default)]
struct Emitted {
    ids: HashMap<String, i64>,
}

impl Emitted {
    fn insert(&mut self, alert: &Alert) {
        self.ids
            .insert(alert.alert_id.clone(), i64::from(alert.window_start));
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    fn forget_before(&mut self, window_start: i64) {
        self.ids.retain(|_, start| *start >= window_start);
    }
}

pub struct Alerter {
    quota: QuotaConfig,
    config: AlertsConfig,
    kafka: KafkaConfig,
    view: Arc<RwLock<QuotaView>>,
    emitted: Arc<Mutex<Emitted>>,
    quota_follower: Follower,
    alerts_follower: Follower,
    owned: Arc<RwLock<BTreeSet<i32>>>,
    partitions: i32,
    publisher: Publisher,
    store: Store,
    metrics: Arc<Metrics>,
    webhook: reqwest::Client,
}

impl Alerter {
    pub fn new(
        quota: QuotaConfig,
        config: AlertsConfig,
        kafka: &KafkaConfig,
        partitions: i32,
        owned: Arc<RwLock<BTreeSet<i32>>>,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let view = Arc::new(RwLock::new(QuotaView::tracking_changes(quota.accounts)));
        let quota_follower = {
            let view = view.clone();
            Follower::start(kafka, &kafka.quota_topic, move |key, payload| {
                if let Ok(mut view) = view.write() {
                    view.apply_raw(key, payload);
                }
            })?
        };
        let emitted: Arc<Mutex<Emitted>> = Arc::default();
        let alerts_follower = {
            let emitted = emitted.clone();
            Follower::start(kafka, &kafka.alerts_topic, move |_, payload| {
                if let (Some(Ok(alert)), Ok(mut emitted)) =
                    (payload.map(serde_json::from_slice::<Alert>), emitted.lock())
                {
                    emitted.insert(&alert);
                }
            })?
        };
        Ok(Self {
            quota,
            config,
            kafka: kafka.clone(),
            view,
            emitted,
            quota_follower,
            alerts_follower,
            owned,
            partitions,
            publisher: Publisher::new(kafka, Duration::from_secs(10))?,
            store,
            metrics,
            webhook: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    /// Evaluates changed accounts every `evaluate_interval_ms` until shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.config.evaluate_interval_ms.max(50));
        let mut owned_before = BTreeSet::new();
        let mut pending: BTreeSet<(String, String)> = BTreeSet::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            let ready = self.quota_follower.state().is_caught_up()
                && self.alerts_follower.state().is_caught_up();
            if !ready {
                continue;
            }
            let owned = self.owned.read().map(|o| o.clone()).unwrap_or_default();
            let accounts = match self.view.write() {
                // Partitions moved: everything the new set owns is looked at again.
                Ok(mut view) if owned != owned_before => {
                    view.take_changed();
                    view.keys()
                }
                Ok(mut view) => view.take_changed(),
                Err(_) => continue,
            };
            owned_before = owned.clone();
            pending.extend(
                accounts
                    .into_iter()
                    .filter(|(p, a)| owned.contains(&owner_partition(p, a, self.partitions))),
            );
            if pending.is_empty() {
                continue;
            }
            let batch: Vec<_> = pending.iter().cloned().collect();
            match self.evaluate(&batch).await {
                Ok(()) => pending.clear(),
                // Kept pending: the next tick tries them again.
                Err(err) => tracing::warn!(%err, "quota alert evaluation failed; retrying"),
            }
        }
    }

    async fn evaluate(&self, accounts: &[(String, String)]) -> anyhow::Result<()> {
        let now_ms = tally_quota::now_ms();
        let now = u32::try_from(now_ms / 1000).unwrap_or(0);
        let w = WindowStarts::at(now_ms);
        let mut statuses = Vec::new();
        let mut alerts = Vec::new();
        for (project, account) in accounts {
            let Some(view) = self
                .view
                .read()
                .ok()
                .and_then(|v| v.account(project, account).cloned())
            else {
                continue;
            };
            let (plan_name, plan) = self.quota.effective_limits(view.settings.as_ref());
            let usage = view.usage(now_ms);
            let decision = evaluate(
                &self.quota,
                &plan_name,
                &plan,
                &usage,
                &CheckRequest::default(),
                now_ms,
            );
            for limit in &decision.limits {
                let window_start = match limit.window {
                    "hour" => w.hour,
                    "day" => w.day,
                    "month" => w.month,
                    // The sliding minute and the per-request cap have no window to alert once in.
                    _ => continue,
                };
                let used = i64::try_from(limit.used).unwrap_or(i64::MAX);
                let status = LimitStatus::of(used, limit.limit, &plan.thresholds);
                statuses.push(StatusRow {
                    project_id: project.clone(),
                    account_id: account.clone(),
                    plan: plan_name.clone(),
                    limit_name: limit.name.to_owned(),
                    window: limit.window.to_owned(),
                    window_start: u32::try_from(window_start).unwrap_or(0),
                    limit_value: limit.limit,
                    used: limit.used,
                    status: status.as_str().to_owned(),
                    updated_at: now,
                    version: u64::try_from(now_ms).unwrap_or(0),
                });
                let t = plan.thresholds;
                for (threshold, level, percent) in [
                    ("warning", LimitStatus::Warning, t.warning_percent),
                    ("critical", LimitStatus::Critical, t.critical_percent),
                    ("exceeded", LimitStatus::Exceeded, t.exceeded_percent),
                ] {
                    if status < level {
                        continue;
                    }
                    let id = alert_id(project, account, limit.name, window_start, threshold);
                    if self.emitted.lock().map(|e| e.contains(&id)).unwrap_or(true) {
                        continue;
                    }
                    alerts.push(Alert {
                        alert_id: id,
                        project_id: project.clone(),
                        account_id: account.clone(),
                        plan: plan_name.clone(),
                        limit_name: limit.name.to_owned(),
                        window: limit.window.to_owned(),
                        window_start: u32::try_from(window_start).unwrap_or(0),
                        threshold: threshold.to_owned(),
                        threshold_percent: percent,
                        limit_value: limit.limit,
                        used: limit.used,
                        emitted_at: now,
                    });
                }
            }
        }
        if !alerts.is_empty() {
            let records = alerts.iter().map(|a| {
                (
                    a.alert_id.clone(),
                    serde_json::to_vec(a).unwrap_or_default(),
                )
            });
            if let Err(err) = self
                .publisher
                .send_all(&self.kafka.alerts_topic, records)
                .await
            {
                self.metrics.quota_publish_failures.inc();
                return Err(err);
            }
            if let Ok(mut emitted) = self.emitted.lock() {
                for alert in &alerts {
                    emitted.insert(alert);
                }
                emitted.forget_before(w.month - DAY_SECS);
            }
            for alert in &alerts {
                self.metrics
                    .quota_alerts
                    .with_label_values(&[&alert.threshold])
                    .inc();
                tracing::info!(project = %alert.project_id, limit = %alert.limit_name, threshold = %alert.threshold, "quota alert");
                self.call_webhook(alert.clone());
            }
            self.store.insert("quota_alerts", &alerts).await?;
        }
        self.store.insert("quota_status", &statuses).await?;
        Ok(())
    }

    /// Posts the alert to the webhook in the background, with retries.
    fn call_webhook(&self, alert: Alert) {
        if self.config.webhook_url.is_empty() {
            return;
        }
        let (client, url, attempts) = (
            self.webhook.clone(),
            self.config.webhook_url.clone(),
            self.config.webhook_max_attempts.max(1),
        );
        tokio::spawn(async move {
            let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            let post = || async {
                match client.post(&url).json(&alert).send().await {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) => Err(format!("refused with {}", response.status())),
                    Err(err) => Err(format!("unreachable: {err}")),
                }
            };
            let delivered = retry(backoff, post, |err, attempt, _| {
                tracing::warn!(%err, attempt, "alert webhook failed");
                if attempt >= attempts {
                    After::GiveUp
                } else {
                    After::Retry
                }
            })
            .await;
            if delivered.is_err() {
                tracing::error!(alert = %alert.alert_id, "alert webhook gave up");
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn owners_spread_and_ids_are_stable() {
        let owners: BTreeSet<i32> = (0..200)
            .map(|i| owner_partition("p", &format!("acct-{i}"), 6))
            .collect();
        assert_eq!(owners.len(), 6);
        assert_eq!(owner_partition("p", "a", 6), owner_partition("p", "a", 6));
        let id = alert_id("p", "a", "tokens_per_day", 86_400, "warning");
        assert_eq!(id, alert_id("p", "a", "tokens_per_day", 86_400, "warning"));
        assert_ne!(id, alert_id("p", "a", "tokens_per_day", 86_400, "critical"));
        assert_eq!(id.len(), 32);
    }
}
