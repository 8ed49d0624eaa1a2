//! Which rows exist in ClickHouse, so the fold never looks up a row that cannot exist yet.
//!
//! Most batches open new sessions and new usage rows; looking each up costs a read of
//! the granules its key falls in, which at millions of sessions is a scan per batch. The
//! aggregator owns its partitions' rows: nobody else writes them while it does. So it takes,
//! once, the keys that have a row — a partition's sessions when the partition is assigned, a
//! usage bucket's row keys the first time a batch touches it — and adds every key it folds
//! after. A key outside these sets has no row and starts empty; a key inside is looked up
//! as before (or found in the row cache).
//!
//! Keys are kept as 64-bit hashes under a per-process random key, so a client cannot aim
//! collisions at the sets; a collision only costs a lookup that finds nothing. A set that is
//! not loaded, or was dropped to stay within `max_known_keys`, answers "maybe": the rows are
//! looked up, as before this filter existed.

use crate::fold::Group;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// About what one remembered key costs, for the sizing rule in the config's docs.
pub const BYTES_PER_KEY: usize = 16;

/// The hashes are already uniform: the sets use them as they are.
#[derive(Default)]
pub struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// A set of key hashes.
pub type HashSet64 = HashSet<u64, BuildHasherDefault<Identity>>;

/// Hashes keys under the process's random key; cloned into the store's loading calls so
/// they hash rows as they stream in instead of holding them.
#[derive(Clone, Default)]
pub struct KeyHasher(RandomState);

impl KeyHasher {
    pub fn session(&self, project_id: &str, session_id: &str) -> u64 {
        self.0.hash_one((project_id, session_id))
    }

    /// A usage row's key within its bucket: account, model, operation.
    pub fn usage(&self, account_id: &str, model: &str, operation: &str) -> u64 {
        self.0.hash_one((account_id, model, operation))
    }
}

/// What the filter says about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existence {
    /// No row: the fold starts one.
    Absent,
    /// A row may exist: look it up (unless cached).
    Maybe,
}

pub struct KnownRows {
    hasher: KeyHasher,
    /// Sessions with a row, by partition; a partition without a set answers `Maybe`.
    sessions: HashMap<i32, HashSet64>,
    /// Accounts with a row, by usage bucket; a bucket without a set answers `Maybe`.
    usage: HashMap<Group, HashSet64>,
    max_keys: usize,
}

impl KnownRows {
    pub fn new(max_keys: usize) -> Self {
        Self {
            hasher: KeyHasher::default(),
            sessions: HashMap::new(),
            usage: HashMap::new(),
            max_keys,
        }
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// Takes in partitions' sets of sessions, hashed by [`KnownRows::hasher`] as ClickHouse
    /// listed them (replacing what was known of those partitions).
    pub fn load_sessions(&mut self, sessions: HashMap<i32, HashSet64>) {
        self.sessions.extend(sessions);
        self.bound(None);
    }

    pub fn session(&self, partition: i32, project_id: &str, session_id: &str) -> Existence {
        match self.sessions.get(&partition) {
            Some(set) if !set.contains(&self.hasher.session(project_id, session_id)) => {
                Existence::Absent
            }
            _ => Existence::Maybe,
        }
    }

    /// Notes that a session has (or is about to have) a row.
    pub fn add_session(&mut self, partition: i32, project_id: &str, session_id: &str) {
        let hash = self.hasher.session(project_id, session_id);
        if let Some(set) = self.sessions.get_mut(&partition) {
            set.insert(hash);
        }
    }

    pub fn has_usage_bucket(&self, bucket: &Group) -> bool {
        self.usage.contains_key(bucket)
    }

    /// Takes in the row keys of a usage bucket, hashed by [`KnownRows::hasher`] as
    /// ClickHouse listed them.
    pub fn load_usage_bucket(&mut self, bucket: Group, keys: HashSet64) {
        let keep = bucket.clone();
        self.usage.insert(bucket, keys);
        self.bound(Some(&keep));
    }

    /// Whether a usage row (account, model, operation) may exist in a bucket.
    pub fn usage(
        &self,
        bucket: &Group,
        (account, model, operation): (&str, &str, &str),
    ) -> Existence {
        match self.usage.get(bucket) {
            Some(set) if !set.contains(&self.hasher.usage(account, model, operation)) => {
                Existence::Absent
            }
            _ => Existence::Maybe,
        }
    }

    /// Notes that a usage row has (or is about to have) a row in a bucket.
    pub fn add_usage(&mut self, bucket: &Group, (account, model, operation): (&str, &str, &str)) {
        let hash = self.hasher.usage(account, model, operation);
        if let Some(set) = self.usage.get_mut(bucket) {
            set.insert(hash);
        }
    }

    /// Forgets what is known of a partition's rows (revoked, or rebuilt).
    pub fn forget_partition(&mut self, partition: i32) {
        self.sessions.remove(&partition);
        self.forget_usage_of(partition);
    }

    /// Forgets a partition's usage buckets only (a rebuild rewrote them).
    pub fn forget_usage_of(&mut self, partition: i32) {
        self.usage
            .retain(|bucket, _| bucket.kafka_partition != partition);
    }

    pub fn forget_all(&mut self) {
        self.sessions.clear();
        self.usage.clear();
    }

    /// Keys held in all sets.
    pub fn len(&self) -> usize {
        self.sessions.values().map(HashSet::len).sum::<usize>()
            + self.usage.values().map(HashSet::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Past `max_keys`, drops usage buckets (oldest first, never `keep`), then the largest
    /// partitions' session sets: what is dropped answers `Maybe` again.
    fn bound(&mut self, keep: Option<&Group>) {
        let mut total = self.len();
        if total <= self.max_keys {
            return;
        }
        let mut buckets: Vec<(u32, Group)> = self
            .usage
            .keys()
            .filter(|b| Some(*b) != keep)
            .map(|b| (b.bucket, b.clone()))
            .collect();
        buckets.sort_by_key(|(start, _)| *start);
        for (_, bucket) in buckets {
            if total <= self.max_keys {
                return;
            }
            if let Some(set) = self.usage.remove(&bucket) {
                total -= set.len();
            }
        }
        let mut partitions: Vec<(usize, i32)> =
            self.sessions.iter().map(|(p, s)| (s.len(), *p)).collect();
        partitions.sort_unstable_by(|a, b| b.cmp(a));
        for (len, partition) in partitions {
            if total <= self.max_keys {
                return;
            }
            tracing::warn!(
                partition,
                sessions = len,
                "more known rows than max_known_keys: this partition's sessions are looked up again"
            );
            self.sessions.remove(&partition);
            total -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::GroupTable;
    use tally_schema::rollups::Granularity;

    fn day(partition: i32, bucket: u32) -> Group {
        Group {
            table: GroupTable::Usage(Granularity::Day),
            project_id: "p".into(),
            bucket,
            kafka_partition: partition,
        }
    }

    fn sessions(known: &KnownRows, partition: i32, ids: &[&str]) -> HashMap<i32, HashSet64> {
        let set = ids.iter().map(|s| known.hasher().session("p", s)).collect();
        HashMap::from([(partition, set)])
    }

    /// Usage row keys of these accounts, all with one model and operation.
    fn accounts(known: &KnownRows, ids: &[&str]) -> HashSet64 {
        ids.iter()
            .map(|a| known.hasher().usage(a, "m", "chat"))
            .collect()
    }

    fn row(account: &str) -> (&str, &str, &str) {
        (account, "m", "chat")
    }

    #[test]
    fn an_unloaded_partition_or_bucket_answers_maybe() {
        let known = KnownRows::new(100);
        assert_eq!(known.session(0, "p", "s"), Existence::Maybe);
        assert_eq!(known.usage(&day(0, 1), row("a")), Existence::Maybe);
    }

    #[test]
    fn loaded_keys_may_exist_others_are_absent_and_added_keys_join() {
        let mut known = KnownRows::new(100);
        known.load_sessions(sessions(&known, 0, &["s1"]));
        assert_eq!(known.session(0, "p", "s1"), Existence::Maybe);
        assert_eq!(known.session(0, "p", "s2"), Existence::Absent);
        assert_eq!(
            known.session(0, "q", "s1"),
            Existence::Absent,
            "projects differ"
        );
        assert_eq!(
            known.session(1, "p", "s2"),
            Existence::Maybe,
            "partition 1 unknown"
        );
        known.add_session(0, "p", "s2");
        assert_eq!(known.session(0, "p", "s2"), Existence::Maybe);

        let a = accounts(&known, &["a"]);
        known.load_usage_bucket(day(0, 1), a);
        assert!(known.has_usage_bucket(&day(0, 1)));
        assert_eq!(known.usage(&day(0, 1), row("a")), Existence::Maybe);
        assert_eq!(known.usage(&day(0, 1), row("b")), Existence::Absent);
        let other_model = ("a", "m2", "chat");
        assert_eq!(known.usage(&day(0, 1), other_model), Existence::Absent);
        known.add_usage(&day(0, 1), row("b"));
        assert_eq!(known.usage(&day(0, 1), row("b")), Existence::Maybe);
        // Adding to a bucket never loaded does not make it known.
        known.add_usage(&day(0, 2), row("b"));
        assert_eq!(known.usage(&day(0, 2), row("c")), Existence::Maybe);
    }

    #[test]
    fn forgetting_a_partition_makes_its_keys_maybe_again() {
        let mut known = KnownRows::new(100);
        known.load_sessions(sessions(&known, 0, &["s1"]));
        let a = accounts(&known, &["a"]);
        known.load_usage_bucket(day(0, 1), a.clone());
        known.load_usage_bucket(day(1, 1), a);
        known.forget_partition(0);
        assert_eq!(known.session(0, "p", "s2"), Existence::Maybe);
        assert_eq!(known.usage(&day(0, 1), row("b")), Existence::Maybe);
        assert_eq!(known.usage(&day(1, 1), row("b")), Existence::Absent);
    }

    #[test]
    fn past_the_bound_old_buckets_go_first_then_the_largest_sessions() {
        let mut known = KnownRows::new(5);
        known.load_sessions(sessions(&known, 0, &["s1", "s2"]));
        known.load_sessions(sessions(&known, 1, &["s3"]));
        known.load_usage_bucket(day(0, 1), accounts(&known, &["a"]));
        known.load_usage_bucket(day(0, 2), accounts(&known, &["a"]));
        assert_eq!(known.len(), 5);
        known.load_usage_bucket(day(0, 3), accounts(&known, &["a", "b"]));
        // Bucket 1, then bucket 2 dropped: the new bucket 3 is kept.
        assert!(!known.has_usage_bucket(&day(0, 1)));
        assert!(!known.has_usage_bucket(&day(0, 2)));
        assert!(known.has_usage_bucket(&day(0, 3)));
        assert_eq!(known.len(), 5);
        known.load_usage_bucket(day(0, 4), accounts(&known, &["a", "b", "c"]));
        // Bucket 3 goes, then partition 0's two sessions: 1 + 3 keys left.
        assert!(!known.has_usage_bucket(&day(0, 3)));
        assert_eq!(known.session(0, "p", "s9"), Existence::Maybe);
        assert_eq!(known.session(1, "p", "s9"), Existence::Absent);
        assert_eq!(known.len(), 4);
    }

    #[test]
    fn hashes_differ_between_processes_keys() {
        // Two hashers stand for two processes: a client cannot precompute collisions.
        let (a, b) = (KeyHasher::default(), KeyHasher::default());
        assert_ne!(a.session("p", "s"), b.session("p", "s"));
        assert_eq!(a.session("p", "s"), a.clone().session("p", "s"));
    }
}
