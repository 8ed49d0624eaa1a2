//! How many accounts the in-memory quota state may hold: the aggregator's counters, each
//! ingest replica's view and the alerter's view. Usage of an account past a cap still counts
//! in every rollup; only its quota counters are not kept.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[quota.accounts]`: caps on the accounts held in memory for quota checks and alerts.
/// An account counts from its first usage (or settings) of the month until all of its windows
/// have passed. Past a cap, a new account has no counters: its checks see no usage and answer
/// `tracked: false` (refused with reason `quota_account_cap` when `fail_open` is false), and
/// `tally_*_quota_accounts_refused_total` counts it. Settings set through the admin route are
/// always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountCaps {
    /// Most accounts of one project (about 2.8 KB each in every ingest replica).
    pub per_project: usize,
    /// Most accounts of all projects together.
    pub total: usize,
}

impl Default for AccountCaps {
    fn default() -> Self {
        Self {
            per_project: 500_000,
            total: 2_000_000,
        }
    }
}

/// Counts the accounts held, by project, against [`AccountCaps`].
#[derive(Debug, Default)]
pub struct AccountTally {
    caps: AccountCaps,
    by_project: HashMap<String, usize>,
    total: usize,
    refused: u64,
}

impl AccountTally {
    pub fn new(caps: AccountCaps) -> Self {
        Self {
            caps,
            ..Self::default()
        }
    }

    /// Whether `project_id` has reached its cap, or all projects theirs.
    pub fn is_full(&self, project_id: &str) -> bool {
        self.total >= self.caps.total
            || self.by_project.get(project_id).copied().unwrap_or(0) >= self.caps.per_project
    }

    /// Counts a new account of `project_id` if the caps allow it; otherwise counts a refusal.
    pub fn admit(&mut self, project_id: &str) -> bool {
        if self.is_full(project_id) {
            self.refused += 1;
            return false;
        }
        self.force_admit(project_id);
        true
    }

    /// Counts a new account whatever the caps say (settings from the admin route).
    pub fn force_admit(&mut self, project_id: &str) {
        *self.by_project.entry(project_id.to_owned()).or_default() += 1;
        self.total += 1;
    }

    /// An account of `project_id` left.
    pub fn release(&mut self, project_id: &str) {
        if let Some(count) = self.by_project.get_mut(project_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.by_project.remove(project_id);
            }
            self.total = self.total.saturating_sub(1);
        }
    }

    /// Accounts held in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// New accounts refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_project_and_in_total_and_free_on_release() {
        let mut tally = AccountTally::new(AccountCaps {
            per_project: 2,
            total: 3,
        });
        assert!(tally.admit("a") && tally.admit("a"));
        assert!(!tally.admit("a"), "a is at its cap");
        assert!(tally.admit("b"));
        assert!(!tally.admit("c"), "all projects are at the total");
        assert_eq!((tally.total(), tally.refused()), (3, 2));
        tally.release("a");
        assert!(tally.admit("c"));
        tally.force_admit("c");
        assert_eq!(tally.total(), 4);
        tally.release("nobody");
        assert_eq!(tally.total(), 4, "an unknown project frees nothing");
    }
}
