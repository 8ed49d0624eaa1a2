//! Ingest's body parsing under libFuzzer: the first byte picks the `Content-Encoding`
//! (none, gzip or zstd), the rest is the body. Decoding and parsing must never panic, and
//! every event they accept must survive the trip through its Kafka envelope that the
//! aggregator decodes (accepted means folded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_schema::envelope::Envelope;
use tally_schema::validate::{parse_batch, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, raw)) = data.split_first() else {
        return;
    };
    let encoding = match selector % 3 {
        0 => None,
        1 => Some("gzip"),
        _ => Some("zstd"),
    };
    let limits = Limits::default();
    let Ok(body) = tally_ingest::body::decode_body(encoding, raw, 5 * 1024 * 1024) else {
        return;
    };
    let now = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default();
    let Ok(parsed) = parse_batch(&body, &limits, now) else {
        return;
    };
    for event in parsed.events {
        let envelope = Envelope::new("p", 0, event);
        let decoded = Envelope::decode(&envelope.encode()).expect("an accepted event decodes");
        assert_eq!(decoded, envelope);
    }
});
