//! Every account's settings and per-partition counters, as the topic last said.

use crate::model::{
    AccountCaps, AccountSettings, AccountTally, AccountUsage, CounterRecord, QuotaRecord,
};
use std::collections::{HashMap, HashSet};

/// One account in the view.
#[derive(Debug, Clone, Default)]
pub struct AccountView {
    pub settings: Option<AccountSettings>,
    /// Counters by partition (a handful at most, so a vector).
    pub counters: Vec<CounterRecord>,
}

impl AccountView {
    pub fn usage(&self, now_ms: i64) -> AccountUsage {
        AccountUsage::sum(&self.counters, now_ms)
    }
}

/// The whole view: (project, account) → settings and counters, at most as many accounts as
/// the caps allow (counters of a new account past a cap are not kept).
#[derive(Debug, Default)]
pub struct QuotaView {
    accounts: HashMap<(String, String), AccountView>,
    tally: AccountTally,
    /// Accounts changed since the last [`QuotaView::take_changed`], when tracking is on.
    changed: Option<HashSet<(String, String)>>,
}

impl QuotaView {
    pub fn new(caps: AccountCaps) -> Self {
        Self {
            accounts: HashMap::new(),
            tally: AccountTally::new(caps),
            changed: None,
        }
    }

    /// A view that remembers which accounts changed (the aggregator's alerting reads that).
    pub fn tracking_changes(caps: AccountCaps) -> Self {
        Self {
            changed: Some(HashSet::new()),
            ..Self::new(caps)
        }
    }

    pub fn apply(&mut self, record: QuotaRecord) {
        let (project_id, account_id) = match &record {
            QuotaRecord::Counters(c) => (c.project_id.clone(), c.account_id.clone()),
            QuotaRecord::Settings {
                project_id,
                account_id,
                ..
            } => (project_id.clone(), account_id.clone()),
        };
        let key = (project_id, account_id);
        if !self.accounts.contains_key(&key) {
            match record {
                QuotaRecord::Counters(_) if !self.tally.admit(&key.0) => return,
                QuotaRecord::Counters(_) => {}
                QuotaRecord::Settings { .. } => self.tally.force_admit(&key.0),
            }
        }
        let entry = self.accounts.entry(key.clone()).or_default();
        match record {
            QuotaRecord::Counters(c) => {
                match entry
                    .counters
                    .iter_mut()
                    .find(|e| e.partition == c.partition)
                {
                    // A counter never goes back: a replayed older record changes nothing.
                    Some(existing) if existing.offset > c.offset => {}
                    Some(existing) => *existing = c,
                    None => entry.counters.push(c),
                }
            }
            QuotaRecord::Settings { settings, .. } => entry.settings = Some(settings),
        }
        if let Some(changed) = &mut self.changed {
            changed.insert(key);
        }
    }

    /// Applies a record as read from the topic: a tombstone (no payload) of a counters key
    /// removes that partition's counters, and the account once nothing of it is left.
    pub fn apply_raw(&mut self, key: Option<&[u8]>, payload: Option<&[u8]>) {
        match payload {
            Some(payload) => match QuotaRecord::from_json(payload) {
                Ok(record) => self.apply(record),
                Err(err) => tracing::warn!(%err, "unreadable quota record skipped"),
            },
            None => {
                if let Some((project_id, account_id, partition)) =
                    key.and_then(CounterRecord::parse_key)
                {
                    self.forget_counters(project_id, account_id, partition);
                }
            }
        }
    }

    fn forget_counters(&mut self, project_id: String, account_id: String, partition: i32) {
        let key = (project_id, account_id);
        let Some(entry) = self.accounts.get_mut(&key) else {
            return;
        };
        entry.counters.retain(|c| c.partition != partition);
        if entry.counters.is_empty() && entry.settings.is_none() {
            self.accounts.remove(&key);
            self.tally.release(&key.0);
        }
        if let Some(changed) = &mut self.changed {
            changed.insert(key);
        }
    }

    pub fn account(&self, project_id: &str, account_id: &str) -> Option<&AccountView> {
        self.accounts
            .get(&(project_id.to_owned(), account_id.to_owned()))
    }

    /// Every (project, account) in the view.
    pub fn keys(&self) -> Vec<(String, String)> {
        self.accounts.keys().cloned().collect()
    }

    /// Whether `project_id` (or the whole view) is at its cap: an account missing from the
    /// view may then have usage the view does not hold.
    pub fn is_full(&self, project_id: &str) -> bool {
        self.tally.is_full(project_id)
    }

    /// Counters of new accounts not kept because of a cap, so far.
    pub fn refused(&self) -> u64 {
        self.tally.refused()
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// The accounts changed since the last call.
    pub fn take_changed(&mut self) -> Vec<(String, String)> {
        self.changed
            .as_mut()
            .map(|c| c.drain().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn counters(partition: i32, offset: u64, tokens: i64, now: i64) -> QuotaRecord {
        let mut c = CounterRecord::new("p", "a", partition);
        c.add(now, tokens, 0, 1, now);
        c.offset = offset;
        QuotaRecord::Counters(c)
    }

    #[test]
    fn partitions_add_up_and_older_records_never_win() {
        let now = 1_795_000_000_000;
        let mut view = QuotaView::tracking_changes(AccountCaps::default());
        view.apply(counters(0, 10, 5, now));
        view.apply(counters(1, 3, 7, now));
        view.apply(counters(0, 9, 1000, now));
        let usage = view.account("p", "a").unwrap().usage(now);
        assert_eq!(usage.day_tokens, 12);
        assert_eq!(usage.minute_requests, 2);
        assert_eq!(view.take_changed(), vec![("p".to_owned(), "a".to_owned())]);
        assert!(view.take_changed().is_empty());
        assert!(view.account("p", "b").is_none());

        // Tombstones remove each partition's counters, then the account.
        let key = |partition| CounterRecord::new("p", "a", partition).key();
        view.apply_raw(Some(key(0).as_bytes()), None);
        assert_eq!(view.account("p", "a").unwrap().usage(now).day_tokens, 7);
        view.apply_raw(Some(key(1).as_bytes()), None);
        assert!(view.account("p", "a").is_none());
        assert!(view.is_empty());
    }

    #[test]
    fn a_full_project_keeps_its_accounts_and_settings_and_refuses_new_counters() {
        let now = 1_795_000_000_000;
        let mut view = QuotaView::new(AccountCaps {
            per_project: 1,
            total: 10,
        });
        let record = |project: &str, account: &str| {
            let mut c = CounterRecord::new(project, account, 0);
            c.add(now, 5, 0, 1, now);
            QuotaRecord::Counters(c)
        };
        view.apply(record("p", "a"));
        view.apply(record("p", "b"));
        view.apply(record("q", "a"));
        assert!(view.account("p", "b").is_none());
        assert_eq!((view.len(), view.refused()), (2, 1));
        assert!(view.is_full("p") && !view.is_full("r"));
        view.apply(record("p", "a"));
        assert_eq!(view.account("p", "a").unwrap().usage(now).day_tokens, 5);
        view.apply(QuotaRecord::Settings {
            project_id: "p".into(),
            account_id: "c".into(),
            settings: AccountSettings::default(),
            updated_at_ms: now,
        });
        assert!(view.account("p", "c").is_some(), "settings are always kept");
        // A tombstone frees the place.
        view.apply_raw(Some(CounterRecord::new("p", "a", 0).key().as_bytes()), None);
        view.apply_raw(Some(CounterRecord::new("p", "c", 0).key().as_bytes()), None);
        assert!(view.account("p", "c").is_some(), "c has settings");
        assert!(view.is_full("p"));
    }
}
