//! The requests and tokens this replica admitted in the last minute, per account, so a burst
//! is held back before the aggregator's counters show it.
//!
//! Bounded: accounts idle for a minute leave as time passes (a queue of touches, so each
//! check does constant work however many accounts there are), and at most
//! [`MAX_TRACKED_ACCOUNTS`] are tracked at once; past that a new account is not tracked
//! locally and its checks rely on the view alone until room frees up.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tally_quota::{SecondSlot, MINUTE_SLOTS};

/// Most accounts tracked at once per replica (about 300 bytes each at most).
pub const MAX_TRACKED_ACCOUNTS: usize = 1_000_000;

type AccountKey = (String, String);

#[derive(Default)]
struct Accounts {
    slots: HashMap<AccountKey, VecDeque<SecondSlot>>,
    /// (second, account) of every slot opened, oldest first.
    opened: VecDeque<(i64, AccountKey)>,
}

impl Accounts {
    /// Drops slots older than the minute, and accounts left without any.
    fn expire(&mut self, now_sec: i64) {
        while let Some((sec, _)) = self.opened.front() {
            if *sec > now_sec - MINUTE_SLOTS {
                break;
            }
            let Some((_, key)) = self.opened.pop_front() else {
                break;
            };
            if let Some(slots) = self.slots.get_mut(&key) {
                while slots
                    .front()
                    .is_some_and(|s| s.sec <= now_sec - MINUTE_SLOTS)
                {
                    slots.pop_front();
                }
                if slots.is_empty() {
                    self.slots.remove(&key);
                }
            }
        }
    }
}

#[derive(Default)]
pub struct LocalMinute {
    accounts: Mutex<Accounts>,
}

impl LocalMinute {
    pub fn record(&self, project_id: &str, account_id: &str, now_sec: i64, tokens: u64) {
        let Ok(mut accounts) = self.accounts.lock() else {
            return;
        };
        accounts.expire(now_sec);
        let key = (project_id.to_owned(), account_id.to_owned());
        if accounts.slots.len() >= MAX_TRACKED_ACCOUNTS && !accounts.slots.contains_key(&key) {
            return;
        }
        let slots = accounts.slots.entry(key.clone()).or_default();
        match slots.back_mut() {
            Some(last) if last.sec == now_sec => {
                last.requests = last.requests.saturating_add(1);
                last.tokens = last.tokens.saturating_add(tokens);
            }
            _ => {
                slots.push_back(SecondSlot {
                    sec: now_sec,
                    requests: 1,
                    tokens,
                });
                accounts.opened.push_back((now_sec, key));
            }
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
        let Some(slots) = accounts
            .slots
            .get(&(project_id.to_owned(), account_id.to_owned()))
        else {
            return (0, 0, None);
        };
        let live = slots.iter().filter(|s| s.sec > now_sec - MINUTE_SLOTS);
        live.fold(
            (0, 0, None),
            |(r, t, oldest): (u64, u64, Option<i64>), s| {
                (
                    r.saturating_add(s.requests),
                    t.saturating_add(s.tokens),
                    Some(oldest.map_or(s.sec, |o| o.min(s.sec))),
                )
            },
        )
    }

    /// Accounts tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.accounts.lock().map(|a| a.slots.len()).unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn idle_accounts_leave_and_active_ones_keep_their_minute() {
        let local = LocalMinute::default();
        for i in 0..1000 {
            local.record("p", &format!("a{i}"), 100, 5);
        }
        local.record("p", "busy", 130, 7);
        local.record("p", "busy", 159, 1);
        assert_eq!(local.tracked(), 1001);
        assert_eq!(local.usage("p", "a1", 159), (1, 5, Some(100)));
        // A minute after the first burst only the busy account is left.
        local.record("p", "busy", 160, 1);
        assert_eq!(local.tracked(), 1);
        assert_eq!(local.usage("p", "a1", 160), (0, 0, None));
        assert_eq!(local.usage("p", "busy", 160), (3, 9, Some(130)));
        local.record("p", "busy", 250, 0);
        assert_eq!(local.usage("p", "busy", 250), (1, 0, Some(250)));
        assert_eq!(local.tracked(), 1);
    }
}
