//! The quota role: `POST /v1/quota/check`, answered from [`QuotaState`], ingest's in-memory
//! view of `tally.quota.v1` (which the read role's usage route and the admin role use too).
//! The rules themselves (limits, windows, the decision) are `tally_quota`'s.
//!
//! The check never touches ClickHouse or Kafka: it reads the view under a read lock.
//! Requests per minute across replicas: the view carries every replica's admitted requests
//! once the aggregator has folded their `llm_request` events (the pipeline delay, about a
//! second or two); meanwhile each replica also counts the requests it admitted itself and
//! takes the larger of the two. So with N replicas an account can overshoot its per-minute
//! limit by at most what the other N-1 replicas admitted during the pipeline delay.

pub(crate) mod check;
mod local;
#[cfg(test)]
mod tests;

use crate::error::ApiError;
use crate::server::Gate;
use actix_web::web;
use local::LocalMinute;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tally_quota::{AccountSettings, AccountUsage, QuotaConfig, QuotaRecord};
use tally_quota::{Follower, FollowerState, Publisher, QuotaView};
use tally_runtime::kafka::KafkaConfig;

/// An account as the view has it.
pub struct Lookup {
    pub settings: Option<AccountSettings>,
    pub usage: AccountUsage,
    /// False when the account is not in the view because its project is at its cap
    /// (`[quota.accounts]`): its usage is then unknown here.
    pub tracked: bool,
}

/// The quota role's state.
pub struct CheckState {
    pub gate: Arc<Gate>,
    pub quota: Arc<QuotaState>,
}

impl CheckState {
    pub fn new(gate: Arc<Gate>, quota: Arc<QuotaState>) -> Self {
        Self { gate, quota }
    }

    /// Why the check is not ready, if it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        (!self.quota.is_loaded()).then_some("quota view loading")
    }
}

/// Registers the quota routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/quota/check", web::post().to(check::post_check));
}

/// ingest's view of the quota topic, the requests it admitted itself this minute, and the
/// publisher of settings.
pub struct QuotaState {
    pub config: QuotaConfig,
    view: Arc<RwLock<QuotaView>>,
    local: LocalMinute,
    /// Follows `tally.quota.v1`; absent in unit tests, where the view is filled by hand.
    follower: Option<Follower>,
    follower_state: Arc<FollowerState>,
    publisher: Option<Publisher>,
    quota_topic: String,
}

impl QuotaState {
    /// A view that follows nothing (unit tests fill it with [`QuotaState::apply`]).
    pub fn detached(config: QuotaConfig) -> Self {
        Self {
            view: Arc::new(RwLock::new(QuotaView::new(config.accounts))),
            config,
            local: LocalMinute::default(),
            follower: None,
            follower_state: Arc::default(),
            publisher: None,
            quota_topic: String::new(),
        }
    }

    /// Follows the quota topic and can publish to it.
    pub fn connect(config: QuotaConfig, kafka: &KafkaConfig) -> anyhow::Result<Self> {
        let view = Arc::new(RwLock::new(QuotaView::new(config.accounts)));
        let follower = {
            let view = view.clone();
            Follower::start(kafka, &kafka.quota_topic, move |key, payload| {
                if let Ok(mut view) = view.write() {
                    view.apply_raw(key, payload);
                }
            })?
        };
        Ok(Self {
            config,
            view,
            local: LocalMinute::default(),
            follower_state: follower.state(),
            follower: Some(follower),
            publisher: Some(Publisher::new(kafka, Duration::from_secs(10))?),
            quota_topic: kafka.quota_topic.clone(),
        })
    }

    /// Applies a record to this replica's view at once (the follower brings it again later).
    pub fn apply(&self, record: QuotaRecord) {
        if let Ok(mut view) = self.view.write() {
            view.apply(record);
        }
    }

    /// Whether the view has read the whole topic once (always, when it follows nothing).
    pub fn is_loaded(&self) -> bool {
        self.follower.is_none() || self.follower_state.is_caught_up()
    }

    /// Waits until the view has read the whole topic once.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        self.follower
            .as_ref()
            .is_none_or(|f| f.wait_caught_up(timeout))
    }

    /// Seconds since the view last heard from Kafka; a view that never did is stale forever.
    pub fn staleness_secs(&self, now_ms: i64) -> f64 {
        if self.follower.is_none() {
            return 0.0;
        }
        match self.follower_state.staleness_ms(now_ms) {
            Some(ms) if self.follower_state.is_caught_up() => ms as f64 / 1000.0,
            _ => f64::INFINITY,
        }
    }

    pub fn is_stale(&self, now_ms: i64) -> bool {
        self.staleness_secs(now_ms) > self.config.stale_after_secs as f64
    }

    pub fn accounts(&self) -> usize {
        self.view.read().map(|v| v.len()).unwrap_or(0)
    }

    /// Counters of new accounts the view did not keep because of `[quota.accounts]` caps.
    pub fn refused_accounts(&self) -> u64 {
        self.view.read().map(|v| v.refused()).unwrap_or(0)
    }

    /// An account's settings and usage as the view has them.
    pub fn lookup(&self, project_id: &str, account_id: &str, now_ms: i64) -> Lookup {
        let view = self.view.read().ok();
        let account = view
            .as_ref()
            .and_then(|v| v.account(project_id, account_id));
        let settings = account.and_then(|a| a.settings.clone());
        let usage = account.map(|a| a.usage(now_ms)).unwrap_or_default();
        // An account missing from a project at its cap may have usage the view did not keep.
        let tracked = account.is_some() || !view.as_ref().is_some_and(|v| v.is_full(project_id));
        let (requests, tokens, oldest) = self.local.usage(project_id, account_id, now_ms / 1000);
        Lookup {
            settings,
            usage: usage.with_local(requests, tokens, oldest),
            tracked,
        }
    }

    /// Publishes a record to the quota topic and applies it here.
    pub(crate) async fn publish(&self, record: QuotaRecord) -> Result<(), ApiError> {
        if let Some(publisher) = &self.publisher {
            publisher
                .send(&self.quota_topic, &record.key(), &record.to_json())
                .await
                .map_err(|err| {
                    tracing::warn!(%err, "quota record not acknowledged by Kafka");
                    ApiError::Unavailable {
                        what: "Kafka",
                        retry_after_secs: 1,
                    }
                })?;
        }
        self.apply(record);
        Ok(())
    }
}
