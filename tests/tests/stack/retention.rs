//! Raw-event retention drops whole expired month partitions on the real ClickHouse 18.16 and
//! leaves recent raw events and every rollup alone.

use chrono::{TimeZone, Utc};
use tally_runtime::clickhouse::ClickHouseConfig;
use tally_schema::envelope::Envelope;
use tally_schema::event::{Event, Timestamp};
use tally_schema::rollups::{Granularity, UsageKey, UsageRow};
use tally_schema::rows::EventRow;
use tally_tests::env::clickhouse_url;
use tally_tests::workload::Workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_months_are_dropped_and_the_rest_kept() {
    let config = ClickHouseConfig {
        url: clickhouse_url(),
        database: format!("tally_test_{}", uuid::Uuid::new_v4().simple()),
        ..ClickHouseConfig::default()
    };
    tally_runtime::migrate::run(&config)
        .await
        .expect("migrations");
    let client = config.client();

    let old = Utc
        .with_ymd_and_hms(2025, 1, 15, 12, 0, 0)
        .single()
        .expect("date");
    let events: Vec<Event> = Workload::new(3, old)
        .session(0, "acct-1")
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("event"))
        .collect();
    let mut rows = Vec::new();
    for (offset, mut event) in events.into_iter().enumerate() {
        if offset % 2 == 1 {
            // Every other event is recent.
            event.timestamp = Timestamp::from_datetime(Utc::now());
        }
        rows.push(EventRow::from_envelope(
            &Envelope::new("p", 0, event),
            0,
            offset as u64,
        ));
    }
    let recent = rows
        .iter()
        .filter(|r| r.ts_ms > old.timestamp_millis() + 86_400_000)
        .count() as u64;
    let mut insert = client.insert::<EventRow>("events").await.expect("insert");
    for row in &rows {
        insert.write(row).await.expect("write");
    }
    insert.end().await.expect("end");
    let first =
        serde_json::from_value::<Event>(Workload::new(3, old).session(0, "acct-1")[0].clone())
            .expect("event");
    let usage = UsageRow::empty(&UsageKey::of(Granularity::Day, "p", &first, 0));
    let mut insert = client
        .insert::<UsageRow>("usage_daily")
        .await
        .expect("insert");
    insert
        .write(&UsageRow { events: 1, ..usage })
        .await
        .expect("write");
    insert.end().await.expect("end");

    let dropped = tally_aggregator::retention::drop_expired(&client, &config.database, 90)
        .await
        .expect("retention");
    assert_eq!(dropped, vec![202501]);
    let left: u64 = client
        .query("SELECT count() FROM events")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(left, recent);
    let kept: u64 = client
        .query("SELECT count() FROM usage_daily")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(kept, 1, "rollups are kept for ever");
    let again = tally_aggregator::retention::drop_expired(&client, &config.database, 90)
        .await
        .expect("retention");
    assert!(again.is_empty());

    let _ = config
        .server_client()
        .query(&format!("DROP DATABASE {}", config.database))
        .execute()
        .await;
}
