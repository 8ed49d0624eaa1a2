//! When ClickHouse refuses a batch for good, find the records behind it and fold the rest.
//!
//! The batch is split in halves, in Kafka order, and each half applied again; a half that is
//! refused is split further, until single records remain. A single record that is refused
//! goes to the dead-letter topic with ClickHouse's reason and is counted in
//! `tally_aggregator_records_total{outcome="rejected"}`. Everything else folds as usual, so
//! one bad input costs about 2·log2(batch) extra round trips and never stops the partition.
//!
//! Before each try the fold's cached rows are dropped (a refused write may have left the
//! effect of its records in them) and reloaded from ClickHouse; the per-row offsets then
//! apply each record exactly once, as after a crash.

use super::{decode, Aggregator, CallError, Decoded, Phase};
use crate::fold::Record;
use rdkafka::message::{Message, OwnedMessage};
use std::collections::{HashSet, VecDeque};

impl Aggregator {
    /// Applies `records` (decoded from `messages`); records ClickHouse refuses are
    /// dead-lettered one by one.
    pub(super) async fn apply_isolating(
        &mut self,
        records: Vec<Record>,
        messages: &[OwnedMessage],
        phase: &mut Phase,
    ) -> anyhow::Result<()> {
        let positions: Vec<(i32, u64)> = records.iter().map(|r| (r.partition, r.offset)).collect();
        match self.apply(records, phase).await {
            Ok(()) => return Ok(()),
            Err(CallError::Stopped(err)) => return Err(err),
            Err(err) => {
                tracing::warn!(records = positions.len(), %err, "clickhouse refused a batch; isolating its records")
            }
        }
        let positions: HashSet<(i32, u64)> = positions.into_iter().collect();
        let suspects: Vec<&OwnedMessage> = messages
            .iter()
            .filter(|m| {
                u64::try_from(m.offset()).is_ok_and(|o| positions.contains(&(m.partition(), o)))
            })
            .collect();
        let (left, right) = suspects.split_at(suspects.len() / 2);
        let mut pending: VecDeque<&[&OwnedMessage]> = VecDeque::from([left, right]);
        while let Some(part) = pending.pop_front() {
            if part.is_empty() {
                continue;
            }
            self.folder.forget_rows();
            let records = part.iter().filter_map(|m| record(m)).collect();
            match self.apply(records, phase).await {
                Ok(()) => {}
                Err(CallError::Stopped(err)) => return Err(err),
                Err(CallError::Rejected { what, source }) => match part {
                    [message] => {
                        let reason = format!("clickhouse refused it ({what}): {source}");
                        self.dead_letter(message, &reason).await?;
                        self.metrics.records.with_label_values(&["rejected"]).inc();
                    }
                    _ => {
                        let (left, right) = part.split_at(part.len() / 2);
                        pending.push_front(right);
                        pending.push_front(left);
                    }
                },
            }
        }
        // Rows cached from the last refused try may hold effects that were never written.
        self.folder.forget_rows();
        Ok(())
    }
}

/// The event record `message` carries, decoded again.
fn record(message: &OwnedMessage) -> Option<Record> {
    match decode(message) {
        Ok(Decoded::Event(envelope)) => Some(Record {
            partition: message.partition(),
            offset: u64::try_from(message.offset()).ok()?,
            envelope: *envelope,
        }),
        _ => None,
    }
}
