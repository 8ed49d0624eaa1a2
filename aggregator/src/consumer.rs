//! The consumer loop: read a batch of records, fold it, write it to ClickHouse, and only then
//! commit its offsets. A crash anywhere in between replays records the fold then skips.

use crate::config::AggregatorConfig;
use crate::dead_letter::DeadLetters;
use crate::fold::{Folder, GroupTable, Record};
use crate::metrics::Metrics;
use crate::store::Store;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Headers;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tally_quota::Publisher;
use tally_quota::QuotaLedger;
use tally_runtime::backoff::{retry, After, Backoff};
use tally_schema::envelope::{Envelope, RebuildRequest, CONTROL_HEADER, ENVELOPE_VERSION};
use tally_schema::pricing::PriceTable;
use tokio::sync::watch;

mod isolate;
mod quota;
mod retry;

pub use retry::CallError;

/// Partition assignments seen by librdkafka, applied by the loop between batches.
#[derive(Debug)]
enum Assignment {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// The consumer's context: records partition assignments for the loop to apply between
/// batches, and turns librdkafka's statistics into the per-partition lag gauge.
pub struct RebalanceLog {
    changes: Mutex<Vec<Assignment>>,
    topic: String,
    metrics: Arc<Metrics>,
}

impl RebalanceLog {
    fn record(&self, change: Assignment) {
        if let Ok(mut changes) = self.changes.lock() {
            changes.push(change);
        }
    }

    fn take(&self) -> Vec<Assignment> {
        self.changes
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }
}

impl ClientContext for RebalanceLog {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (partition, stats) in &topic.partitions {
            // -1 is librdkafka's "unknown" (not assigned, or no position yet).
            if *partition >= 0 && stats.consumer_lag >= 0 {
                self.metrics
                    .lag
                    .with_label_values(&[&partition.to_string()])
                    .set(stats.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for RebalanceLog {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions =
            |list: &TopicPartitionList| list.elements().iter().map(|e| e.partition()).collect();
        match rebalance {
            Rebalance::Assign(list) => self.record(Assignment::Assigned(partitions(list))),
            Rebalance::Revoke(list) => self.record(Assignment::Revoked(partitions(list))),
            Rebalance::Error(err) => tracing::warn!(%err, "rebalance error"),
        }
    }
}

pub struct Aggregator {
    config: AggregatorConfig,
    consumer: StreamConsumer<RebalanceLog>,
    store: Store,
    dead_letters: DeadLetters,
    folder: Folder,
    ledger: QuotaLedger,
    publisher: Publisher,
    /// Partitions this replica owns, shared with the alerter.
    owned: Arc<RwLock<BTreeSet<i32>>>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl Aggregator {
    pub fn new(
        config: AggregatorConfig,
        prices: PriceTable,
        client: clickhouse::Client,
        metrics: Arc<Metrics>,
        owned: Arc<RwLock<BTreeSet<i32>>>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let mut kafka = config.kafka.client_config();
        if !config.instance_id.is_empty() {
            // Static membership: a restarted replica takes its partitions back at once.
            kafka.set("group.instance.id", &config.instance_id);
        }
        let consumer: StreamConsumer<RebalanceLog> = kafka
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", "1000")
            .set("statistics.interval.ms", "5000")
            .create_with_context(RebalanceLog {
                changes: Mutex::default(),
                topic: config.kafka.events_topic.clone(),
                metrics: metrics.clone(),
            })?;
        consumer.subscribe(&[&config.kafka.events_topic])?;
        let dead_letters = DeadLetters::new(&config.kafka)?;
        let publisher = Publisher::new(&config.kafka, Duration::from_secs(10))?;
        Ok(Self {
            ledger: QuotaLedger::new(config.quota.accounts),
            publisher,
            owned,
            folder: Folder::new(
                config.dedup.clone(),
                prices,
                config.max_cached_rows,
                config.max_known_keys,
            ),
            config,
            consumer,
            store: Store::new(client),
            dead_letters,
            metrics,
            shutdown,
        })
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Folds until shutdown is signalled; the batch in hand is finished first.
    pub async fn run(mut self) -> anyhow::Result<()> {
        while !self.stopping() {
            let mut messages = self.next_batch().await;
            self.apply_rebalances().await?;
            // Records of a partition revoked while the batch was gathered belong to its new
            // owner now: folding them here too would race it.
            if let Ok(owned) = self.owned.read() {
                messages.retain(|m| owned.contains(&m.partition()));
            }
            if messages.is_empty() {
                continue;
            }
            self.process(messages).await?;
        }
        tracing::info!("aggregator stopped");
        Ok(())
    }

    /// Waits for a first record, then gathers more until the batch is full or its time is up.
    async fn next_batch(&mut self) -> Vec<OwnedMessage> {
        let mut batch = Vec::new();
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            received = self.consumer.recv() => match received {
                Ok(message) => batch.push(message.detach()),
                Err(err) => {
                    tracing::warn!(%err, "kafka receive failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return batch;
                }
            },
            _ = shutdown.changed() => return batch,
            // Wake up now and then so rebalances are applied even when no records come.
            _ = tokio::time::sleep(Duration::from_secs(1)) => return batch,
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.batch_max_wait_ms);
        while batch.len() < self.config.batch_max_events {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                Ok(Err(err)) => {
                    tracing::warn!(%err, "kafka receive failed");
                    break;
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Drops state of partitions that moved and rebuilds the dedup window of new ones.
    async fn apply_rebalances(&mut self) -> anyhow::Result<()> {
        for change in self.consumer.context().take() {
            tracing::info!(?change, "partition assignment changed");
            match change {
                Assignment::Revoked(partitions) => {
                    for p in partitions {
                        self.folder.forget_partition(p);
                        self.ledger.forget_partition(p);
                        let _ = self.metrics.lag.remove_label_values(&[&p.to_string()]);
                    }
                }
                Assignment::Assigned(partitions) => {
                    // Another replica may have folded these partitions meanwhile.
                    self.folder.forget_all();
                    let window_ms =
                        i64::try_from(self.config.dedup.window_secs * 1000).unwrap_or(i64::MAX);
                    let since = chrono_now_ms() - window_ms;
                    for p in &partitions {
                        self.restore_quota(*p).await?;
                    }
                    if self.config.max_known_keys > 0 {
                        let hasher = self.folder.known().hasher().clone();
                        let sessions = self
                            .retry("load known sessions", || {
                                self.store.partition_sessions(&partitions, &hasher)
                            })
                            .await?;
                        self.folder.load_known_sessions(sessions);
                    }
                    for p in partitions {
                        let known = self
                            .retry("load dedup window", || self.store.known_events(p, since))
                            .await?;
                        for e in known {
                            self.folder.remember(
                                p,
                                &e.project_id,
                                &e.event_id,
                                e.first_offset,
                                e.first_received_at_ms,
                            );
                        }
                    }
                }
            }
        }
        if let Ok(assignment) = self.consumer.assignment() {
            self.metrics
                .assigned_partitions
                .set(assignment.count() as i64);
            if let Ok(mut owned) = self.owned.write() {
                *owned = assignment
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
            }
        }
        Ok(())
    }

    async fn process(&mut self, messages: Vec<OwnedMessage>) -> anyhow::Result<()> {
        let mut phase = Phase::start(self.metrics.clone());
        let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let mut records = Vec::with_capacity(messages.len());
        let mut poison = Vec::new();
        let mut rebuilds = Vec::new();
        for message in &messages {
            next_offsets.insert(message.partition(), message.offset() + 1);
            let offset = u64::try_from(message.offset()).unwrap_or(0);
            match decode(message) {
                Ok(Decoded::Event(envelope)) => records.push(Record {
                    partition: message.partition(),
                    offset,
                    envelope: *envelope,
                }),
                Ok(Decoded::Rebuild(request)) => {
                    rebuilds.push((records.len(), message.partition(), offset, request))
                }
                Err(reason) => poison.push((message, reason)),
            }
        }
        // Poison goes to the dead-letter topic before the batch's offsets can be committed.
        for (message, reason) in poison {
            self.dead_letter(message, &reason).await?;
        }

        phase.end("decode");
        // A rebuild reads the raw events before its control record, so what precedes it in
        // the batch is applied first.
        let mut rest = records;
        let mut applied = 0;
        for (position, partition, offset, request) in rebuilds {
            let tail = rest.split_off(position - applied);
            applied = position;
            self.apply_isolating(rest, &messages, &mut phase).await?;
            self.rebuild(partition, offset, request).await?;
            phase.end("rebuild");
            rest = tail;
        }
        self.apply_isolating(rest, &messages, &mut phase).await?;

        let mut offsets = TopicPartitionList::new();
        for (partition, next) in next_offsets {
            offsets.add_partition_offset(
                &self.config.kafka.events_topic,
                partition,
                Offset::Offset(next),
            )?;
        }
        if let Err(err) = self.consumer.commit(&offsets, CommitMode::Sync) {
            // The partition may have moved; its new owner replays and skips what is written.
            tracing::warn!(%err, "offset commit failed");
        }
        phase.end("commit");
        Ok(())
    }

    /// Sends a record that cannot be folded to the dead-letter topic, retrying until Kafka
    /// has it (the batch's offsets are committed only after).
    async fn dead_letter(&self, message: &OwnedMessage, reason: &str) -> anyhow::Result<()> {
        tracing::error!(partition = message.partition(), offset = message.offset(), %reason, "dead-lettering a record");
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        retry(
            backoff,
            || self.dead_letters.send(message, reason),
            |err, _, _| {
                tracing::warn!(%err, "dead-letter topic unavailable; retrying");
                if self.stopping() {
                    After::GiveUp
                } else {
                    After::Retry
                }
            },
        )
        .await?;
        self.metrics
            .records
            .with_label_values(&["dead_lettered"])
            .inc();
        Ok(())
    }

    /// Loads, folds and writes records.
    async fn apply(&mut self, records: Vec<Record>, phase: &mut Phase) -> Result<(), CallError> {
        if records.is_empty() {
            return Ok(());
        }
        self.load_known(&records).await?;
        phase.end("known");
        self.load(&records).await?;
        phase.end("load");
        let output = self.folder.fold(records);
        phase.end("fold");
        self.retry("write batch", || self.store.write(&output))
            .await?;
        phase.end("write");
        self.update_quota(&output.quota)
            .await
            .map_err(CallError::Stopped)?;
        phase.end("quota");
        let metrics = &self.metrics;
        for (table, rows) in [
            ("events", output.events.len()),
            ("sessions", output.sessions.len()),
            ("usage_hourly", output.usage_hourly.len()),
            ("usage_daily", output.usage_daily.len()),
            ("tool_usage_hourly", output.tools.len()),
        ] {
            metrics
                .rows_written
                .with_label_values(&[table])
                .inc_by(rows as u64);
        }
        metrics
            .records
            .with_label_values(&["folded"])
            .inc_by(output.events.len() as u64);
        metrics
            .records
            .with_label_values(&["resend"])
            .inc_by(output.resends_skipped);
        metrics
            .records
            .with_label_values(&["redelivery"])
            .inc_by(output.redeliveries_skipped);
        metrics.unpriced.inc_by(output.unpriced);
        Ok(())
    }

    /// Recomputes this partition's rollups of a time range from the raw event store.
    async fn rebuild(
        &mut self,
        partition: i32,
        offset: u64,
        request: RebuildRequest,
    ) -> anyhow::Result<()> {
        let range = request.day_range_secs();
        let raw = self
            .retry("read raw events", || {
                self.store.rebuild_events(partition, offset, range)
            })
            .await?;
        let events = raw.len();
        let output = self.folder.rebuild(partition, offset, range, raw);
        self.retry("write rebuilt rows", || self.store.write(&output))
            .await?;
        self.metrics.rebuilds.inc();
        // Re-priced rows change the month's cost: the counters start again from them.
        self.restore_quota(partition).await?;
        tracing::info!(
            partition,
            offset,
            from = range.0,
            to = range.1,
            events,
            sessions = output.sessions.len(),
            usage_rows = output.usage_hourly.len() + output.usage_daily.len(),
            "rebuilt rollups"
        );
        Ok(())
    }

    /// Reads which rows exist in the usage buckets this batch opens, so its plan
    /// leaves out the rows that cannot exist (see `known.rs`).
    async fn load_known(&mut self, records: &[Record]) -> Result<(), CallError> {
        let hasher = self.folder.known().hasher().clone();
        let unknown = if self.config.max_known_keys > 0 {
            self.folder.unknown_usage_groups(records)
        } else {
            BTreeMap::new()
        };
        for ((granularity, project), groups) in unknown {
            let mut buckets: Vec<u32> = groups.iter().map(|g| g.bucket).collect();
            let mut partitions: Vec<i32> = groups.iter().map(|g| g.kafka_partition).collect();
            buckets.sort_unstable();
            buckets.dedup();
            partitions.sort_unstable();
            partitions.dedup();
            let keys = self
                .retry("load known usage keys", || {
                    let at = (&buckets[..], &partitions[..]);
                    self.store.usage_keys(granularity, &project, at, &hasher)
                })
                .await?;
            self.folder.load_known_usage(&groups, keys);
        }
        self.metrics
            .known_keys
            .set(self.folder.known().len() as i64);
        Ok(())
    }

    /// Loads the rows the batch touches that are not in memory and may exist.
    async fn load(&mut self, records: &[Record]) -> Result<(), CallError> {
        let plan = self.folder.plan(records);
        tracing::debug!(
            sessions = plan.sessions.values().map(Vec::len).sum::<usize>(),
            row_groups = plan.rows.len(),
            row_ids = plan.rows.values().map(Vec::len).sum::<usize>(),
            "rows to look up"
        );
        for (project_id, session_ids) in &plan.sessions {
            let rows = self
                .retry("load sessions", || {
                    self.store.load_sessions(project_id, session_ids)
                })
                .await?;
            self.folder.add_sessions(project_id, session_ids, rows);
        }
        for ((table, project), lookup) in plan.lookups() {
            let at = (&lookup.buckets[..], &lookup.partitions[..]);
            match table {
                GroupTable::Usage(granularity) => {
                    let rows = self
                        .retry("load usage rows", || {
                            self.store
                                .load_usage_rows(granularity, &project, at, &lookup.ids)
                        })
                        .await?;
                    let wanted = rows
                        .into_iter()
                        .filter(|row| plan.wants_usage(granularity, row));
                    self.folder.add_usage_rows(granularity, wanted.collect());
                }
                GroupTable::Tools => {
                    let rows = self
                        .retry("load tool rows", || {
                            self.store.load_tool_rows(&project, at, &lookup.ids)
                        })
                        .await?;
                    let wanted = rows.into_iter().filter(|row| plan.wants_tool(row));
                    self.folder.add_tool_rows(wanted.collect());
                }
            }
        }
        Ok(())
    }
}

/// Times the phases of one batch into `tally_aggregator_batch_phase_duration_seconds`.
struct Phase {
    metrics: Arc<Metrics>,
    since: std::time::Instant,
}

impl Phase {
    fn start(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            since: std::time::Instant::now(),
        }
    }

    fn end(&mut self, name: &str) {
        let now = std::time::Instant::now();
        self.metrics
            .phase_duration
            .with_label_values(&[name])
            .observe((now - self.since).as_secs_f64());
        self.since = now;
    }
}

/// What a record on the event topic carries.
enum Decoded {
    Event(Box<Envelope>),
    Rebuild(RebuildRequest),
}

/// The content of a record, or why it cannot be folded.
fn decode(message: &OwnedMessage) -> Result<Decoded, String> {
    let payload = message.payload().ok_or("record has no payload")?;
    let control = message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == CONTROL_HEADER)
            .and_then(|h| h.value)
    });
    if let Some(command) = control {
        if command != RebuildRequest::COMMAND.as_bytes() {
            return Err(format!(
                "unknown control command {:?}",
                String::from_utf8_lossy(command)
            ));
        }
        return serde_json::from_slice(payload)
            .map(Decoded::Rebuild)
            .map_err(|err| format!("undecodable rebuild request: {err}"));
    }
    #[derive(serde::Deserialize)]
    struct Version {
        v: u32,
    }
    match Envelope::decode(payload) {
        Ok(envelope) if envelope.v == ENVELOPE_VERSION => Ok(Decoded::Event(Box::new(envelope))),
        Ok(envelope) => Err(format!("unknown envelope version {}", envelope.v)),
        // A newer layout may not decode at all: say so rather than "undecodable".
        Err(err) => match serde_json::from_slice::<Version>(payload) {
            Ok(Version { v }) if v != ENVELOPE_VERSION => {
                Err(format!("unknown envelope version {v}"))
            }
            _ => Err(format!("undecodable envelope: {err}")),
        },
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
