//! Retrying a ClickHouse call: transient failures again and again with backoff, a refusal
//! (see [`crate::store::is_permanent`]) at once to the caller.

use super::Aggregator;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tally_runtime::backoff::{retry, After, Backoff};

impl Aggregator {
    /// Retries a ClickHouse call with exponential backoff until it succeeds, ClickHouse
    /// refuses it for good ([`crate::store::is_permanent`]), or shutdown.
    pub(super) async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, clickhouse::error::Error>>,
    {
        let backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(self.config.max_retry_backoff_ms),
        );
        let result = retry(backoff, &mut call, |err, _, delay| {
            self.metrics.write_failures.inc();
            if crate::store::is_permanent(err) {
                tracing::warn!(%err, what, "clickhouse refused the call");
                return After::GiveUp;
            }
            self.metrics.writing.store(false, Ordering::Relaxed);
            tracing::warn!(%err, what, retry_in_ms = delay.as_millis() as u64, "clickhouse call failed");
            if self.stopping() {
                After::GiveUp
            } else {
                After::Retry
            }
        })
        .await;
        match result {
            Ok(value) => {
                self.metrics.writing.store(true, Ordering::Relaxed);
                Ok(value)
            }
            Err(err) if crate::store::is_permanent(&err) => Err(CallError::Rejected {
                what: what.to_owned(),
                source: err,
            }),
            Err(err) => Err(CallError::Stopped(anyhow::anyhow!(
                "{what} failed at shutdown: {err}"
            ))),
        }
    }
}

/// Why a ClickHouse call gave up.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// ClickHouse refused the statement or its data; retrying cannot help, so the records
    /// behind it are isolated and dead-lettered (see `consumer/isolate.rs`).
    #[error("{what}: clickhouse refused it: {source}")]
    Rejected {
        what: String,
        #[source]
        source: clickhouse::error::Error,
    },
    /// Shutdown came while retrying, or Kafka failed: the batch stays uncommitted.
    #[error(transparent)]
    Stopped(anyhow::Error),
}
