//! The requests and tokens this replica admitted in the last minute, per account, so a burst
//! is held back before the aggregator's counters show it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tally_schema::quota::{SecondSlot, MINUTE_SLOTS};

/// Accounts kept before idle ones are swept out.
const SWEEP_ABOVE: usize = 100_000;

#[derive(Default)]
pub struct LocalMinute {
    accounts: Mutex<HashMap<(String, String), VecDeque<SecondSlot>>>,
}

impl LocalMinute {
    pub fn record(&self, project_id: &str, account_id: &str, now_sec: i64, tokens: u64) {
        let Ok(mut accounts) = self.accounts.lock() else {
            return;
        };
        if accounts.len() > SWEEP_ABOVE {
            accounts
                .retain(|_, slots| slots.back().is_some_and(|s| s.sec > now_sec - MINUTE_SLOTS));
        }
        let slots = accounts
            .entry((project_id.to_owned(), account_id.to_owned()))
            .or_default();
        while slots
            .front()
            .is_some_and(|s| s.sec <= now_sec - MINUTE_SLOTS)
        {
            slots.pop_front();
        }
        match slots.back_mut() {
            Some(last) if last.sec == now_sec => {
                last.requests += 1;
                last.tokens += tokens;
            }
            _ => slots.push_back(SecondSlot {
                sec: now_sec,
                requests: 1,
                tokens,
            }),
        }
    }

    /// Requests, tokens and the oldest second in the last minute.
    pub fn usage(
        &self,
        project_id: &str,
        account_id: &str,
        now_sec: i64,
    ) -> (u64, u64, Option<i64>) {
        let Ok(accounts) = self.accounts.lock() else {
            return (0, 0, None);
        };
        let Some(slots) = accounts.get(&(project_id.to_owned(), account_id.to_owned())) else {
            return (0, 0, None);
        };
        let live = slots.iter().filter(|s| s.sec > now_sec - MINUTE_SLOTS);
        live.fold((0, 0, None), |(r, t, oldest), s| {
            (
                r + s.requests,
                t + s.tokens,
                Some(oldest.map_or(s.sec, |o: i64| o.min(s.sec))),
            )
        })
    }
}
