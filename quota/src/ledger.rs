//! The aggregator's quota counters: each partition's share of every account's usage in the
//! current windows, folded from the same events as the rollups (so exactly once, by the same
//! offset rules) and published to the compacted topic `tally.quota.v1` after each batch is
//! written.
//!
//! When the aggregator takes a partition it starts the partition's counters from ClickHouse
//! (this month's daily rows, this hour's hourly rows, the last minute of raw events) and
//! publishes them all, which also repairs a publish lost to a crash after the write. The
//! ledger holds the rules; the aggregator reads the rows and publishes what it returns.

use crate::model::{
    AccountCaps, AccountTally, CounterRecord, SecondSlot, Window, WindowStarts, MINUTE_SLOTS,
};
use clickhouse::Row;
use serde::Deserialize;
use std::collections::HashMap;

/// One event's share of its account's quota counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaDelta {
    pub partition: i32,
    pub offset: u64,
    pub project_id: String,
    pub account_id: String,
    pub ts_ms: i64,
    pub tokens: i64,
    pub cost_nanos: i64,
    pub requests: u64,
}

/// One partition's usage of one account in one bucket (see `queries::PARTITION_*_USAGE_SINCE`).
#[derive(Debug, Row, Deserialize)]
pub struct PartitionUsage {
    pub project_id: String,
    pub account_id: String,
    pub bucket_start: u32,
    pub tokens: i64,
    pub cost_nanos: i64,
    pub last_offset: u64,
}

/// One partition's requests and tokens of one account in one second.
#[derive(Debug, Row, Deserialize)]
pub struct RecentSecond {
    pub project_id: String,
    pub account_id: String,
    pub second: i64,
    pub requests: u64,
    pub tokens: u64,
}

type CounterKey = (i32, String, String);

/// How often the ledger looks for spent counters.
const EXPIRY_INTERVAL_MS: i64 = 60_000;

/// The counters of the partitions this replica owns, for at most as many accounts as
/// `[quota.accounts]` allows: past a cap, a new account's usage still folds into the rollups
/// but gets no counters.
#[derive(Default)]
pub struct QuotaLedger {
    counters: HashMap<CounterKey, CounterRecord>,
    /// How many partitions hold counters of each account (an account counts once).
    partitions_of: HashMap<(String, String), u32>,
    tally: AccountTally,
    /// When [`QuotaLedger::take_spent`] looks next (unix ms).
    next_expiry_ms: i64,
}

impl QuotaLedger {
    pub fn new(caps: AccountCaps) -> Self {
        Self {
            tally: AccountTally::new(caps),
            ..Self::default()
        }
    }

    /// New accounts refused because of a cap, so far.
    pub fn refused(&self) -> u64 {
        self.tally.refused()
    }

    /// Makes room for `key`'s counters unless its account is new and over a cap.
    fn admit(&mut self, key: &CounterKey) -> bool {
        if self.counters.contains_key(key) {
            return true;
        }
        let account = (key.1.clone(), key.2.clone());
        if let Some(partitions) = self.partitions_of.get_mut(&account) {
            *partitions += 1;
            return true;
        }
        if !self.tally.admit(&key.1) {
            return false;
        }
        self.partitions_of.insert(account, 1);
        true
    }

    fn remove(&mut self, key: &CounterKey) {
        if self.counters.remove(key).is_none() {
            return;
        }
        let account = (key.1.clone(), key.2.clone());
        if let Some(partitions) = self.partitions_of.get_mut(&account) {
            *partitions -= 1;
            if *partitions == 0 {
                self.partitions_of.remove(&account);
                self.tally.release(&key.1);
            }
        }
    }

    /// At most once a minute: removes the counters whose windows have all passed (an account
    /// idle since last month) and returns their keys, for tombstones on the compacted topic,
    /// so the topic, every ingest replica's view and this ledger hold only live accounts.
    pub fn take_spent(&mut self, now_ms: i64) -> Vec<String> {
        if now_ms < self.next_expiry_ms {
            return Vec::new();
        }
        self.next_expiry_ms = now_ms + EXPIRY_INTERVAL_MS;
        let spent: Vec<CounterKey> = self
            .counters
            .iter()
            .filter(|(_, c)| c.is_spent(now_ms))
            .map(|(key, _)| key.clone())
            .collect();
        spent
            .into_iter()
            .filter_map(|key| {
                let record_key = self.counters.get(&key).map(CounterRecord::key);
                self.remove(&key);
                record_key
            })
            .collect()
    }

    pub fn forget_partition(&mut self, partition: i32) {
        let keys: Vec<CounterKey> = self
            .counters
            .keys()
            .filter(|(p, _, _)| *p == partition)
            .cloned()
            .collect();
        for key in &keys {
            self.remove(key);
        }
    }

    /// Replaces a partition's counters with what ClickHouse holds: `daily` since the month's
    /// start, `hourly` of the current hour, `seconds` of the last minute. Returns them all.
    pub fn restore(
        &mut self,
        partition: i32,
        daily: Vec<PartitionUsage>,
        hourly: Vec<PartitionUsage>,
        seconds: Vec<RecentSecond>,
        now_ms: i64,
    ) -> Vec<CounterRecord> {
        self.forget_partition(partition);
        let mut fresh: HashMap<CounterKey, CounterRecord> = HashMap::new();
        let mut entry = |project: &str, account: &str| -> CounterKey {
            let key = (partition, project.to_owned(), account.to_owned());
            fresh
                .entry(key.clone())
                .or_insert_with(|| CounterRecord::new(project, account, partition));
            key
        };
        let mut keyed = Vec::new();
        for row in daily {
            keyed.push((
                entry(&row.project_id, &row.account_id),
                Some(row),
                None,
                None,
            ));
        }
        for row in hourly {
            keyed.push((
                entry(&row.project_id, &row.account_id),
                None,
                Some(row),
                None,
            ));
        }
        for row in seconds {
            keyed.push((
                entry(&row.project_id, &row.account_id),
                None,
                None,
                Some(row),
            ));
        }
        let now_sec = now_ms.div_euclid(1000);
        for (key, day, hour, second) in keyed {
            let Some(c) = fresh.get_mut(&key) else {
                continue;
            };
            // Rows of passed windows count only in the month they belong to; rows ahead of
            // now (a client clock running fast) wait in their own windows.
            if let Some(row) = day {
                let bucket = i64::from(row.bucket_start);
                c.add_to_window(Window::Day, bucket, row.tokens, 0, now_ms);
                let month = WindowStarts::at(bucket.saturating_mul(1000)).month;
                c.add_to_window(Window::Month, month, row.tokens, row.cost_nanos, now_ms);
                c.offset = c.offset.max(row.last_offset);
            }
            if let Some(row) = hour {
                let bucket = i64::from(row.bucket_start);
                c.add_to_window(Window::Hour, bucket, row.tokens, 0, now_ms);
                c.offset = c.offset.max(row.last_offset);
            }
            if let Some(row) = second {
                if row.second > now_sec - MINUTE_SLOTS && row.second <= now_sec + 5 {
                    c.seconds.push(SecondSlot {
                        sec: row.second,
                        requests: row.requests,
                        tokens: row.tokens,
                    });
                }
            }
        }
        let mut restored = Vec::with_capacity(fresh.len());
        for (key, mut c) in fresh {
            if !self.admit(&key) {
                continue;
            }
            c.seconds.sort_by_key(|s| s.sec);
            restored.push(c.clone());
            self.counters.insert(key, c);
        }
        restored
    }

    /// Adds a batch's deltas; returns the counters they changed, to publish.
    pub fn fold(&mut self, deltas: &[QuotaDelta], now_ms: i64) -> Vec<CounterRecord> {
        let mut touched = Vec::new();
        for d in deltas {
            let key = (d.partition, d.project_id.clone(), d.account_id.clone());
            if !self.admit(&key) {
                continue;
            }
            let c = self
                .counters
                .entry(key.clone())
                .or_insert_with(|| CounterRecord::new(&d.project_id, &d.account_id, d.partition));
            c.add(d.ts_ms, d.tokens, d.cost_nanos, d.requests, now_ms);
            c.offset = c.offset.max(d.offset);
            touched.push(key);
        }
        touched.sort();
        touched.dedup();
        touched
            .into_iter()
            .filter_map(|k| self.counters.get(&k).cloned())
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn delta(partition: i32, offset: u64, ts_ms: i64, tokens: i64, requests: u64) -> QuotaDelta {
        QuotaDelta {
            partition,
            offset,
            project_id: "p".into(),
            account_id: "a".into(),
            ts_ms,
            tokens,
            cost_nanos: 10,
            requests,
        }
    }

    #[test]
    fn restore_then_fold_continues_the_windows() {
        let now = 1_795_000_000_000;
        let w = WindowStarts::at(now);
        let mut ledger = QuotaLedger::default();
        let usage = |bucket: i64, tokens| PartitionUsage {
            project_id: "p".into(),
            account_id: "a".into(),
            bucket_start: u32::try_from(bucket).unwrap(),
            tokens,
            cost_nanos: 5,
            last_offset: 40,
        };
        let restored = ledger.restore(
            2,
            vec![usage(w.day, 100), usage(w.month, 30)],
            vec![usage(w.hour, 60)],
            vec![RecentSecond {
                project_id: "p".into(),
                account_id: "a".into(),
                second: now / 1000 - 3,
                requests: 2,
                tokens: 9,
            }],
            now,
        );
        assert_eq!(restored.len(), 1);
        let c = &restored[0];
        let totals = |c: &CounterRecord| {
            (
                c.total(Window::Day, w.day).tokens,
                c.total(Window::Month, w.month).tokens,
                c.total(Window::Hour, w.hour).tokens,
                c.total(Window::Month, w.month).cost_nanos,
            )
        };
        assert_eq!(totals(c), (100, 130, 60, 10));
        assert_eq!((c.offset, c.seconds.len()), (40, 1));
        let after = ledger.fold(&[delta(2, 41, now, 7, 1), delta(2, 42, now, -3, 0)], now);
        assert_eq!(after.len(), 1);
        assert_eq!(
            (after[0].total(Window::Day, w.day).tokens, after[0].offset),
            (104, 42)
        );
        assert!(
            ledger.take_spent(now).is_empty(),
            "this month's counters are live"
        );
        let next_month = WindowStarts::at(now).next_month * 1000;
        let mut idle = QuotaLedger::default();
        idle.fold(&[delta(2, 50, now, 1, 1)], now);
        assert!(
            idle.take_spent(next_month - 1).is_empty(),
            "live until the month ends"
        );
        assert!(
            idle.take_spent(next_month).is_empty(),
            "looks once a minute"
        );
        assert_eq!(
            idle.take_spent(next_month + 60_000),
            vec![CounterRecord::new("p", "a", 2).key()]
        );
        assert!(idle.counters.is_empty());
        ledger.forget_partition(2);
        assert!(ledger.partitions_of.is_empty());
        assert_eq!(
            ledger.fold(&[delta(2, 43, now, 1, 0)], now)[0]
                .total(Window::Day, w.day)
                .tokens,
            1
        );
    }

    #[test]
    fn past_a_cap_new_accounts_get_no_counters_until_a_place_frees() {
        let now = 1_795_000_000_000;
        let mut ledger = QuotaLedger::new(AccountCaps {
            per_project: 2,
            total: 100,
        });
        let for_account = |partition, account: &str| QuotaDelta {
            account_id: account.into(),
            ..delta(partition, 1, now, 5, 1)
        };
        // One account on two partitions counts once.
        let changed = ledger.fold(
            &[
                for_account(0, "a"),
                for_account(1, "a"),
                for_account(0, "b"),
            ],
            now,
        );
        assert_eq!(changed.len(), 3);
        assert!(ledger.fold(&[for_account(0, "c")], now).is_empty());
        assert_eq!(ledger.refused(), 1);
        assert_eq!(ledger.fold(&[for_account(1, "b")], now).len(), 1);
        ledger.forget_partition(0);
        assert_eq!(ledger.partitions_of.len(), 2, "a and b keep partition 1");
        ledger.forget_partition(1);
        assert_eq!(ledger.fold(&[for_account(0, "c")], now).len(), 1);
        let restored = ledger.restore(
            3,
            vec![
                PartitionUsage {
                    project_id: "p".into(),
                    account_id: "d".into(),
                    bucket_start: u32::try_from(WindowStarts::at(now).day).unwrap(),
                    tokens: 1,
                    cost_nanos: 0,
                    last_offset: 1,
                },
                PartitionUsage {
                    project_id: "p".into(),
                    account_id: "e".into(),
                    bucket_start: u32::try_from(WindowStarts::at(now).day).unwrap(),
                    tokens: 1,
                    cost_nanos: 0,
                    last_offset: 1,
                },
            ],
            Vec::new(),
            Vec::new(),
            now,
        );
        assert_eq!(restored.len(), 1, "c and one of d, e fill the project");
    }
}
