//! The fold: Kafka records in, ClickHouse rows out, each record applied exactly once.
//!
//! Pure state, no I/O: the consumer loads the rows a batch needs ([`Folder::plan`]), then
//! writes what [`Folder::fold`] returns. A record is skipped when it is an SDK resend (see
//! [`crate::dedup`]); otherwise it is applied to each row it belongs to — its session, its
//! hourly and daily usage rows, its tool row — unless that row already holds its offset
//! (a redelivery after a crash or rebalance, or a write that reached some tables only).

use crate::dedup::{DedupConfig, DedupWindow, EventKey, Seen};
use crate::known::{Existence, HashSet64, KnownRows};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tally_quota::QuotaDelta;
use tally_schema::envelope::Envelope;
use tally_schema::pricing::PriceTable;
use tally_schema::rollups::{Granularity, ToolKey, ToolRow, UsageKey, UsageRow};
use tally_schema::rows::{EventRow, Priced, SessionRow};
use tally_schema::EventType;

/// One decoded Kafka record.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: u64,
    pub envelope: Envelope,
}

type SessionKey = (String, String);

fn session_key(envelope: &Envelope) -> SessionKey {
    (
        envelope.project_id.clone(),
        envelope.event.session_id.clone(),
    )
}

/// The rows of one table that one partition holds in one time bucket: one lookup reads the
/// rows of some of its accounts (usage) or tools.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group {
    pub table: GroupTable,
    pub project_id: String,
    pub bucket: u32,
    pub kafka_partition: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupTable {
    Usage(Granularity),
    Tools,
}

/// What must be loaded from ClickHouse before a batch can be folded.
#[derive(Debug, Default)]
pub struct LoadPlan {
    /// Session ids by project.
    pub sessions: BTreeMap<String, Vec<String>>,
    /// Usage and tool rows by group: the accounts (usage) or tool names (tools) whose rows
    /// the batch touches and memory does not hold. Loading every row of these ids is enough:
    /// a touched row ClickHouse does not return does not exist yet.
    pub rows: BTreeMap<Group, Vec<String>>,
}

/// One lookup of a [`LoadPlan`]: a table's rows of one project in some buckets, partitions
/// and ids (accounts or tools), a superset of the rows asked for.
#[derive(Debug, Default)]
pub struct RowLookup {
    pub buckets: Vec<u32>,
    pub partitions: Vec<i32>,
    pub ids: Vec<String>,
}

impl LoadPlan {
    /// The plan's rows as one lookup per table and project.
    pub fn lookups(&self) -> BTreeMap<(GroupTable, String), RowLookup> {
        let mut lookups: BTreeMap<(GroupTable, String), RowLookup> = BTreeMap::new();
        for (group, ids) in &self.rows {
            let lookup = lookups
                .entry((group.table, group.project_id.clone()))
                .or_default();
            lookup.buckets.push(group.bucket);
            lookup.partitions.push(group.kafka_partition);
            lookup.ids.extend(ids.iter().cloned());
        }
        for lookup in lookups.values_mut() {
            lookup.buckets.sort_unstable();
            lookup.buckets.dedup();
            lookup.partitions.sort_unstable();
            lookup.partitions.dedup();
            lookup.ids.sort_unstable();
            lookup.ids.dedup();
        }
        lookups
    }

    /// Whether the plan asked for this row (a lookup also returns rows of other partitions
    /// and buckets, which must not enter the cache: another replica may own them).
    pub fn wants(&self, group: &Group, id: &str) -> bool {
        self.rows
            .get(group)
            .is_some_and(|ids| ids.binary_search_by(|i| i.as_str().cmp(id)).is_ok())
    }

    /// Whether the plan asked for this usage row.
    pub fn wants_usage(&self, granularity: Granularity, row: &UsageRow) -> bool {
        self.wants(
            &usage_group(&UsageKey::of_row(granularity, row)),
            &row.account_id,
        )
    }

    /// Whether the plan asked for this tool row.
    pub fn wants_tool(&self, row: &ToolRow) -> bool {
        self.wants(&tool_group(&ToolKey::of_row(row)), &row.tool_name)
    }
}

/// What one fold produced, to be written before offsets are committed.
#[derive(Debug, Default)]
pub struct FoldOutput {
    pub events: Vec<EventRow>,
    pub sessions: Vec<SessionRow>,
    pub usage_hourly: Vec<UsageRow>,
    pub usage_daily: Vec<UsageRow>,
    pub tools: Vec<ToolRow>,
    /// What each newly folded event adds to its account's quota counters.
    pub quota: Vec<QuotaDelta>,
    pub resends_skipped: u64,
    pub redeliveries_skipped: u64,
    pub unpriced: u64,
}

pub struct Folder {
    dedup: DedupConfig,
    prices: PriceTable,
    sessions: HashMap<SessionKey, SessionRow>,
    usage: HashMap<UsageKey, UsageRow>,
    tools: HashMap<ToolKey, ToolRow>,
    windows: HashMap<i32, DedupWindow>,
    max_cached_rows: usize,
    /// Which rows exist in ClickHouse: rows outside it are never looked up.
    known: KnownRows,
}

fn listed<K: Ord>(map: BTreeMap<K, BTreeSet<String>>) -> BTreeMap<K, Vec<String>> {
    map.into_iter()
        .map(|(key, ids)| (key, ids.into_iter().collect()))
        .collect()
}

fn usage_group(key: &UsageKey) -> Group {
    Group {
        table: GroupTable::Usage(key.granularity),
        project_id: key.project_id.clone(),
        bucket: key.bucket,
        kafka_partition: key.kafka_partition,
    }
}

/// A usage row's key within its group: account, model, operation.
fn row_key(key: &UsageKey) -> (&str, &str, &str) {
    (&key.account_id, &key.model, &key.operation)
}

fn tool_group(key: &ToolKey) -> Group {
    Group {
        table: GroupTable::Tools,
        project_id: key.project_id.clone(),
        bucket: key.bucket,
        kafka_partition: key.kafka_partition,
    }
}

impl Folder {
    pub fn new(
        dedup: DedupConfig,
        prices: PriceTable,
        max_cached_rows: usize,
        max_known_keys: usize,
    ) -> Self {
        Self {
            dedup,
            prices,
            sessions: HashMap::new(),
            usage: HashMap::new(),
            tools: HashMap::new(),
            windows: HashMap::new(),
            max_cached_rows,
            known: KnownRows::new(max_known_keys),
        }
    }

    /// What the fold knows of which rows exist; the consumer fills it from ClickHouse.
    pub fn known(&self) -> &KnownRows {
        &self.known
    }

    /// Takes in partitions' sessions that have a row (see [`crate::known`]).
    pub fn load_known_sessions(&mut self, sessions: HashMap<i32, HashSet64>) {
        self.known.load_sessions(sessions);
    }

    /// Takes in, for each of `groups`, the keys of its rows, from ClickHouse's list by
    /// (bucket, partition); a group ClickHouse listed nothing for has no rows.
    pub fn load_known_usage(&mut self, groups: &[Group], mut keys: HashMap<(u32, i32), HashSet64>) {
        for group in groups {
            let set = keys
                .remove(&(group.bucket, group.kafka_partition))
                .unwrap_or_default();
            self.known.load_usage_bucket(group.clone(), set);
        }
    }

    /// The usage groups `records` touch whose row keys are not known yet, by table and
    /// project: the consumer loads their keys before planning.
    pub fn unknown_usage_groups(
        &self,
        records: &[Record],
    ) -> BTreeMap<(Granularity, String), Vec<Group>> {
        let mut unknown: BTreeMap<(Granularity, String), BTreeSet<Group>> = BTreeMap::new();
        for record in records {
            for granularity in Granularity::ALL {
                let key = UsageKey::of(
                    granularity,
                    &record.envelope.project_id,
                    &record.envelope.event,
                    record.partition,
                );
                let group = usage_group(&key);
                if !self.usage.contains_key(&key) && !self.known.has_usage_bucket(&group) {
                    unknown
                        .entry((granularity, key.project_id))
                        .or_default()
                        .insert(group);
                }
            }
        }
        unknown
            .into_iter()
            .map(|(at, groups)| (at, groups.into_iter().collect()))
            .collect()
    }

    /// The rows `records` touch that are not in memory.
    pub fn plan(&self, records: &[Record]) -> LoadPlan {
        let mut sessions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut rows: BTreeMap<Group, BTreeSet<String>> = BTreeMap::new();
        for record in records {
            let envelope = &record.envelope;
            let key = session_key(envelope);
            if !self.sessions.contains_key(&key)
                && self.known.session(record.partition, &key.0, &key.1) == Existence::Maybe
            {
                sessions.entry(key.0).or_default().insert(key.1);
            }
            for granularity in Granularity::ALL {
                let key = UsageKey::of(
                    granularity,
                    &envelope.project_id,
                    &envelope.event,
                    record.partition,
                );
                let group = usage_group(&key);
                if !self.usage.contains_key(&key)
                    && self.known.usage(&group, row_key(&key)) == Existence::Maybe
                {
                    let account = key.account_id.clone();
                    rows.entry(group).or_default().insert(account);
                }
            }
            if let Some(key) = ToolKey::of(&envelope.project_id, &envelope.event, record.partition)
            {
                if !self.tools.contains_key(&key) {
                    let tool = key.tool_name.clone();
                    rows.entry(tool_group(&key)).or_default().insert(tool);
                }
            }
        }
        LoadPlan {
            sessions: listed(sessions),
            rows: listed(rows),
        }
    }

    /// Takes in the session rows loaded for `requested`; sessions without a row start empty.
    pub fn add_sessions(&mut self, project_id: &str, requested: &[String], rows: Vec<SessionRow>) {
        for row in rows {
            self.sessions
                .insert((row.project_id.clone(), row.session_id.clone()), row);
        }
        for session_id in requested {
            self.sessions
                .entry((project_id.to_owned(), session_id.clone()))
                .or_insert_with(|| SessionRow::empty(project_id, session_id, -1));
        }
    }

    /// Takes in the usage rows loaded for a [`LoadPlan`]; a row memory already holds is
    /// newer than or equal to ClickHouse's and is kept.
    pub fn add_usage_rows(&mut self, granularity: Granularity, rows: Vec<UsageRow>) {
        for row in rows {
            self.usage
                .entry(UsageKey::of_row(granularity, &row))
                .or_insert(row);
        }
    }

    /// Takes in the tool rows loaded for a [`LoadPlan`], as [`Folder::add_usage_rows`].
    pub fn add_tool_rows(&mut self, rows: Vec<ToolRow>) {
        for row in rows {
            self.tools.entry(ToolKey::of_row(&row)).or_insert(row);
        }
    }

    /// Adds ids known from the event store to a partition's window.
    pub fn remember(
        &mut self,
        partition: i32,
        project_id: &str,
        event_id: &str,
        offset: u64,
        received_at_ms: i64,
    ) {
        self.windows.entry(partition).or_default().remember(
            EventKey::new(project_id, event_id),
            offset,
            received_at_ms,
            &self.dedup,
        );
    }

    /// Forgets a partition's window, rows and known keys (it was revoked).
    pub fn forget_partition(&mut self, partition: i32) {
        self.windows.remove(&partition);
        self.forget_rows_of(partition);
        self.known.forget_partition(partition);
    }

    /// Drops every cached row (not the dedup windows): they are reloaded on demand.
    pub fn forget_rows(&mut self) {
        self.sessions.clear();
        self.usage.clear();
        self.tools.clear();
    }

    /// Forgets all cached state, known keys included.
    pub fn forget_all(&mut self) {
        self.windows.clear();
        self.forget_rows();
        self.known.forget_all();
    }

    fn price(&self, envelope: &Envelope) -> Priced {
        let event = &envelope.event;
        if event.event_type == EventType::UsageAdjustment {
            // An adjustment's cost is the amount the admin gave, not a price.
            return Priced::Cost(event.provided_cost_nanos.unwrap_or(0));
        }
        if event.usage.is_zero() {
            return Priced::NoUsage;
        }
        let cost = event
            .model
            .as_deref()
            .and_then(|model| self.prices.cost_nanos(model, event.timestamp, &event.usage));
        cost.map_or(Priced::Unpriced, Priced::Cost)
    }

    /// The prices the fold uses.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Folds records (in Kafka order per partition). Everything [`Folder::plan`] listed must
    /// have been loaded.
    pub fn fold(&mut self, records: Vec<Record>) -> FoldOutput {
        let mut out = FoldOutput::default();
        let mut touched_sessions = BTreeSet::new();
        let mut touched_usage = BTreeSet::new();
        let mut touched_tools = BTreeSet::new();
        for record in records {
            let (envelope, partition, offset) = (&record.envelope, record.partition, record.offset);
            let event = &envelope.event;
            let window = self.windows.entry(partition).or_default();
            let event_key = EventKey::new(&envelope.project_id, &event.event_id);
            if window.observe(event_key, offset, envelope.received_at_ms, &self.dedup)
                == Seen::Resend
            {
                out.resends_skipped += 1;
                continue;
            }
            let cost = self.price(envelope);
            let mut applied = false;

            let key = session_key(envelope);
            let session = self
                .sessions
                .entry(key.clone())
                .or_insert_with(|| SessionRow::empty(&key.0, &key.1, -1));
            if !session.has_applied(partition, offset) {
                session.fold(event, cost, partition, offset);
                self.known.add_session(partition, &key.0, &key.1);
                touched_sessions.insert(key);
                applied = true;
            }
            for granularity in Granularity::ALL {
                let key = UsageKey::of(granularity, &envelope.project_id, event, partition);
                let row = self
                    .usage
                    .entry(key.clone())
                    .or_insert_with(|| UsageRow::empty(&key));
                if !row.has_applied(partition, offset) {
                    row.fold(event, cost, offset);
                    self.known.add_usage(&usage_group(&key), row_key(&key));
                    touched_usage.insert(key);
                    applied = true;
                    // The daily row is what quota counters restart from, so it decides.
                    if granularity == Granularity::Day {
                        out.quota
                            .push(quota_delta(envelope, cost, partition, offset));
                    }
                }
            }
            if let Some(key) = ToolKey::of(&envelope.project_id, event, partition) {
                let row = self
                    .tools
                    .entry(key.clone())
                    .or_insert_with(|| ToolRow::empty(&key));
                if !row.has_applied(partition, offset) {
                    row.fold(event, offset);
                    touched_tools.insert(key);
                    applied = true;
                }
            }
            if applied {
                if cost == Priced::Unpriced {
                    out.unpriced += 1;
                }
                out.events
                    .push(EventRow::new(record.envelope, partition, offset));
            } else {
                out.redeliveries_skipped += 1;
            }
        }

        out.sessions = touched_sessions
            .iter()
            .filter_map(|k| self.sessions.get(k).cloned())
            .collect();
        for key in &touched_usage {
            if let Some(row) = self.usage.get(key) {
                match key.granularity {
                    Granularity::Hour => out.usage_hourly.push(row.clone()),
                    Granularity::Day => out.usage_daily.push(row.clone()),
                }
            }
        }
        out.tools = touched_tools
            .iter()
            .filter_map(|k| self.tools.get(k).cloned())
            .collect();
        self.trim(&touched_sessions, &touched_usage, &touched_tools);
        out
    }

    /// Recomputes a partition's rows from the raw events of its sessions (as returned by the
    /// `rebuild_events` query, in offset order): each session whole, and the usage and tool
    /// rows of buckets in `[from_secs, to_secs)`, priced by the current table. Every row gets
    /// the control record's offset as its version, so records before it are never applied
    /// again and records after it fold on top. The partition's cached rows are dropped.
    pub fn rebuild(
        &mut self,
        partition: i32,
        control_offset: u64,
        (from_secs, to_secs): (i64, i64),
        raw: Vec<EventRow>,
    ) -> FoldOutput {
        let mut sessions: BTreeMap<SessionKey, SessionRow> = BTreeMap::new();
        let mut usage: BTreeMap<UsageKey, UsageRow> = BTreeMap::new();
        let mut tools: BTreeMap<ToolKey, ToolRow> = BTreeMap::new();
        for row in raw {
            let (project_id, offset, received_at_ms) =
                (row.project_id.clone(), row.kafka_offset, row.received_at_ms);
            let envelope = Envelope::new(&project_id, received_at_ms, row.into_event());
            let event = &envelope.event;
            let cost = self.price(&envelope);
            let key = session_key(&envelope);
            sessions
                .entry(key.clone())
                .or_insert_with(|| SessionRow::empty(&key.0, &key.1, partition))
                .fold(event, cost, partition, offset);
            let secs = event.timestamp.0.div_euclid(1000);
            if secs < from_secs || secs >= to_secs {
                continue;
            }
            for granularity in Granularity::ALL {
                let key = UsageKey::of(granularity, &project_id, event, partition);
                usage
                    .entry(key.clone())
                    .or_insert_with(|| UsageRow::empty(&key))
                    .fold(event, cost, offset);
            }
            if let Some(key) = ToolKey::of(&project_id, event, partition) {
                tools
                    .entry(key.clone())
                    .or_insert_with(|| ToolRow::empty(&key))
                    .fold(event, offset);
            }
        }
        self.forget_rows_of(partition);
        for (project_id, session_id) in sessions.keys() {
            self.known.add_session(partition, project_id, session_id);
        }
        let mut out = FoldOutput {
            sessions: sessions
                .into_values()
                .map(|row| SessionRow {
                    kafka_offset: control_offset,
                    ..row
                })
                .collect(),
            tools: tools
                .into_values()
                .map(|row| ToolRow {
                    kafka_offset: control_offset,
                    ..row
                })
                .collect(),
            ..FoldOutput::default()
        };
        for (key, row) in usage {
            let row = UsageRow {
                kafka_offset: control_offset,
                ..row
            };
            match key.granularity {
                Granularity::Hour => out.usage_hourly.push(row),
                Granularity::Day => out.usage_daily.push(row),
            }
        }
        out
    }

    /// Drops a partition's cached rows (not its dedup window) and its known usage accounts
    /// (a rebuild rewrites them): they are reloaded on demand.
    fn forget_rows_of(&mut self, partition: i32) {
        self.sessions
            .retain(|_, row| row.kafka_partition != partition);
        self.usage.retain(|key, _| key.kafka_partition != partition);
        self.tools.retain(|key, _| key.kafka_partition != partition);
        self.known.forget_usage_of(partition);
    }

    /// Past the cache limit, drops the sessions this batch did not touch, then, if that is not
    /// enough, its untouched usage and tool rows; what is dropped is in ClickHouse once the
    /// output is written and is reloaded on demand. Sessions go first: most are not seen
    /// again, while an account's usage row serves its every later event of the hour or day.
    fn trim(
        &mut self,
        sessions: &BTreeSet<SessionKey>,
        usage: &BTreeSet<UsageKey>,
        tools: &BTreeSet<ToolKey>,
    ) {
        let cached = |f: &Self| f.sessions.len() + f.usage.len() + f.tools.len();
        if cached(self) <= self.max_cached_rows {
            return;
        }
        self.sessions.retain(|key, _| sessions.contains(key));
        if cached(self) <= self.max_cached_rows {
            return;
        }
        self.usage.retain(|key, _| usage.contains(key));
        self.tools.retain(|key, _| tools.contains(key));
    }
}

#[cfg(test)]
mod tests;

fn quota_delta(envelope: &Envelope, cost: Priced, partition: i32, offset: u64) -> QuotaDelta {
    let event = &envelope.event;
    let tokens = event
        .usage
        .input_tokens
        .saturating_add(event.usage.output_tokens);
    QuotaDelta {
        partition,
        offset,
        project_id: envelope.project_id.clone(),
        account_id: event.account_id.clone(),
        ts_ms: event.timestamp.0,
        tokens: i64::try_from(tokens).unwrap_or(i64::MAX) + event.adjusted_tokens(),
        cost_nanos: match cost {
            Priced::Cost(nanos) => nanos,
            _ => 0,
        },
        requests: u64::from(event.event_type == EventType::LlmRequest),
    }
}
