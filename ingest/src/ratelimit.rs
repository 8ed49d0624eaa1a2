//! Per-key rate limits on every authenticated route: a token bucket of requests per key and
//! route group (write, read, quota, admin), and one of events for the write path.
//!
//! A request takes one request token of its key's bucket for its route group before any
//! other work (so reads cannot starve a key's writes, nor writes its quota checks); a batch
//! then takes one event token per event. Either running dry answers 429 with `Retry-After`.
//! Every authenticated answer carries `X-RateLimit-Limit` (the request bucket's size),
//! `X-RateLimit-Remaining` (whole request tokens left) and `X-RateLimit-Reset` (seconds until
//! the bucket is full again). Buckets live in each ingest replica: with N replicas behind a
//! balancer a key gets up to N times the configured rate. Keys are configured, so the
//! buckets are bounded: four per configured key.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Rates per key. A rate of 0 turns that limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second per key.
    pub requests_per_second: f64,
    /// Requests a key may make at once after being idle.
    pub request_burst: f64,
    /// Sustained events per second per key.
    pub events_per_second: f64,
    /// Events a key may send at once after being idle.
    pub event_burst: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 1000.0,
            request_burst: 2000.0,
            events_per_second: 200_000.0,
            event_burst: 400_000.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = now;
    }

    /// Takes `n` tokens if there are that many; otherwise the seconds until there will be.
    fn take(&mut self, n: f64, rate: f64) -> Result<(), u64> {
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(((n - self.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// The state of a key's request bucket after a decision, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitState {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
}

/// Which family of routes a request belongs to; each has its own request bucket per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteGroup {
    /// `POST /v1/batch`.
    Write,
    /// Sessions, timelines, metrics and usage reads.
    Read,
    /// `POST /v1/quota/check`.
    Quota,
    /// Account settings and adjustments.
    Admin,
}

/// A refusal: how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<(String, RouteGroup), (Bucket, Bucket)>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn with_buckets<T>(
        &self,
        key: &str,
        group: RouteGroup,
        now: Instant,
        f: impl FnOnce(&mut Bucket, &mut Bucket) -> T,
    ) -> T {
        let c = &self.config;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let fresh = || Bucket {
            tokens: f64::MAX,
            updated: now,
        };
        let (requests, events) = buckets
            .entry((key.to_owned(), group))
            .or_insert_with(|| (fresh(), fresh()));
        requests.refill(c.requests_per_second, c.request_burst, now);
        events.refill(c.events_per_second, c.event_burst, now);
        f(requests, events)
    }

    fn state(&self, requests: &Bucket) -> RateLimitState {
        let c = &self.config;
        let missing = (c.request_burst - requests.tokens).max(0.0);
        RateLimitState {
            limit: c.request_burst as u64,
            remaining: requests.tokens.max(0.0).floor() as u64,
            reset_secs: if c.requests_per_second > 0.0 {
                (missing / c.requests_per_second).ceil() as u64
            } else {
                0
            },
        }
    }

    /// Takes one request token of `key`'s bucket for `group`.
    pub fn request(
        &self,
        key: &str,
        group: RouteGroup,
        now: Instant,
    ) -> (RateLimitState, Result<(), Limited>) {
        if self.config.requests_per_second <= 0.0 {
            return (
                RateLimitState {
                    limit: 0,
                    remaining: 0,
                    reset_secs: 0,
                },
                Ok(()),
            );
        }
        let rate = self.config.requests_per_second;
        self.with_buckets(key, group, now, |requests, _| {
            let taken = requests.take(1.0, rate).map_err(|secs| Limited {
                retry_after_secs: secs,
            });
            (self.state(requests), taken)
        })
    }

    /// Takes one event token per event for `key`.
    pub fn events(&self, key: &str, count: usize, now: Instant) -> Result<(), Limited> {
        if self.config.events_per_second <= 0.0 || count == 0 {
            return Ok(());
        }
        let (rate, burst) = (self.config.events_per_second, self.config.event_burst);
        if count as f64 > burst {
            // A batch larger than the bucket could never pass; the batch limit applies instead.
            return Ok(());
        }
        self.with_buckets(key, RouteGroup::Write, now, |_, events| {
            events.take(count as f64, rate).map_err(|secs| Limited {
                retry_after_secs: secs,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(rps: f64, burst: f64, eps: f64, event_burst: f64) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            requests_per_second: rps,
            request_burst: burst,
            events_per_second: eps,
            event_burst,
        })
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = limiter(2.0, 3.0, 0.0, 0.0);
        let t0 = Instant::now();
        for remaining in [2, 1, 0] {
            let (state, taken) = limiter.request("k", RouteGroup::Write, t0);
            assert!(taken.is_ok());
            assert_eq!((state.limit, state.remaining), (3, remaining));
        }
        let (state, taken) = limiter.request("k", RouteGroup::Write, t0);
        assert_eq!(
            taken,
            Err(Limited {
                retry_after_secs: 1
            })
        );
        assert_eq!(state.reset_secs, 2, "3 tokens at 2/s");
        // Half a second later one token is back.
        assert!(limiter
            .request("k", RouteGroup::Write, t0 + Duration::from_millis(500))
            .1
            .is_ok());
        assert!(limiter
            .request("k", RouteGroup::Write, t0 + Duration::from_millis(500))
            .1
            .is_err());
        // Another key has its own bucket.
        assert!(limiter.request("other", RouteGroup::Write, t0).1.is_ok());
        // Its reads have a bucket of their own.
        assert!(limiter.request("k", RouteGroup::Read, t0).1.is_ok());
    }

    #[test]
    fn events_are_counted_per_event() {
        let limiter = limiter(0.0, 0.0, 100.0, 250.0);
        let t0 = Instant::now();
        assert!(limiter.events("k", 200, t0).is_ok());
        assert_eq!(
            limiter.events("k", 100, t0),
            Err(Limited {
                retry_after_secs: 1
            })
        );
        assert!(limiter
            .events("k", 100, t0 + Duration::from_secs(1))
            .is_ok());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limiter = limiter(0.0, 0.0, 0.0, 0.0);
        for _ in 0..10_000 {
            assert!(limiter
                .request("k", RouteGroup::Quota, Instant::now())
                .1
                .is_ok());
            assert!(limiter.events("k", 1000, Instant::now()).is_ok());
        }
    }
}
