//! Retrying with exponential backoff, written once: every retry loop of the services (a
//! ClickHouse call, the quota and dead-letter topics, the alert webhook) is a [`retry`] with
//! its own [`Backoff`] and its own rule for when to stop.

use std::future::Future;
use std::time::Duration;

/// Delays that start at `first` and double up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first.min(max),
            max,
        }
    }

    /// The delay to wait now; the one after it is twice as long, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Retry,
    GiveUp,
}

/// Calls `call` until it succeeds or `on_failure` (given the error, the attempt number from 1
/// and the delay before the next attempt) says to give up; then the last error is returned.
pub async fn retry<T, E, F, Fut>(
    mut backoff: Backoff,
    mut call: F,
    mut on_failure: impl FnMut(&E, u32, Duration) -> After,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) => {
                let delay = backoff.next_delay();
                if on_failure(&err, attempt, delay) == After::GiveUp {
                    return Err(err);
                }
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[tokio::test]
    async fn retries_until_success_or_until_told_to_give_up() {
        let quick = || Backoff::new(Duration::ZERO, Duration::ZERO);
        let mut calls = 0;
        let third_time: Result<u32, &str> = retry(
            quick(),
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err("not yet")
                    } else {
                        Ok(n)
                    }
                }
            },
            |_, _, _| After::Retry,
        )
        .await;
        assert_eq!(third_time, Ok(3));

        let mut seen = Vec::new();
        let given_up: Result<(), String> = retry(
            quick(),
            || async { Err("down".to_owned()) },
            |err, attempt, _| {
                seen.push((err.clone(), attempt));
                if attempt == 2 {
                    After::GiveUp
                } else {
                    After::Retry
                }
            },
        )
        .await;
        assert_eq!(given_up, Err("down".to_owned()));
        assert_eq!(seen, [("down".to_owned(), 1), ("down".to_owned(), 2)]);
    }
}
