//! `tally-aggregator rebuild`: asks every aggregator to recompute the rollups of a time range
//! from the raw event store, by putting a control record on every partition of the event
//! topic. Each partition's owner applies it in order, between the records before and after
//! it, so live folding goes on and nothing is counted twice (see `Folder::rebuild`).

use chrono::{DateTime, NaiveDate, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;
use tally_runtime::kafka::KafkaConfig;
use tally_schema::envelope::{RebuildRequest, CONTROL_HEADER};

/// Reads `2026-11-01` (midnight UTC) or an RFC 3339 time.
pub fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("{text:?} is neither YYYY-MM-DD nor an RFC 3339 time"))?;
    Ok(day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or_default())
}

/// Sends the rebuild request to every partition; returns how many partitions got it.
pub async fn request(
    kafka: &KafkaConfig,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<usize> {
    anyhow::ensure!(from < to, "--from must be before --to");
    let request = RebuildRequest {
        from_ms: from.timestamp_millis(),
        to_ms: to.timestamp_millis(),
    };
    let metadata_client: BaseConsumer = kafka.client_config().create()?;
    let metadata =
        metadata_client.fetch_metadata(Some(&kafka.events_topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == kafka.events_topic)
        .map(|t| t.partitions().len())
        .filter(|&n| n > 0)
        .ok_or_else(|| anyhow::anyhow!("topic {} not found", kafka.events_topic))?;

    let producer: FutureProducer = kafka
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()?;
    let payload = serde_json::to_vec(&request)?;
    for partition in 0..partitions {
        let headers = OwnedHeaders::new().insert(Header {
            key: CONTROL_HEADER,
            value: Some(RebuildRequest::COMMAND),
        });
        let record = FutureRecord::<(), _>::to(&kafka.events_topic)
            .partition(i32::try_from(partition)?)
            .payload(&payload)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(err, _)| anyhow::anyhow!("cannot send the rebuild request: {err}"))?;
    }
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_days_or_instants() {
        assert_eq!(
            parse_time("2026-11-01").expect("day").to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-01T10:30:00Z")
                .expect("time")
                .to_rfc3339(),
            "2026-11-01T10:30:00+00:00"
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn ranges_widen_to_whole_days() {
        let request = RebuildRequest {
            from_ms: parse_time("2026-11-01T10:30:00Z")
                .expect("time")
                .timestamp_millis(),
            to_ms: parse_time("2026-11-02T00:00:01Z")
                .expect("time")
                .timestamp_millis(),
        };
        let (from, to) = request.day_range_secs();
        assert_eq!((from, to), (1_793_491_200, 1_793_491_200 + 2 * 86_400));
    }
}
