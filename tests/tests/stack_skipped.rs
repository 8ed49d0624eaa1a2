//! Says, in one line, that a plain `cargo test` did not run the stack tests, how many there
//! are, how to run them, and whether Kafka and ClickHouse answer here. Never a silent green.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;
use tally_tests::env::{clickhouse_url, kafka_brokers};

/// Whether something accepts TCP connections at `host:port`.
fn answers(address: &str) -> bool {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stack");
    let tests: usize = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .map(|text| {
            text.lines()
                .map(str::trim_start)
                .filter(|l| l.starts_with("#[tokio::test") || l.starts_with("#[test]"))
                .count()
        })
        .sum();
    let kafka = kafka_brokers();
    let clickhouse = clickhouse_url();
    let clickhouse_host = clickhouse
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let state = |up: bool| if up { "answers" } else { "does not answer" };
    println!(
        "stack tests: {tests} not run by a plain `cargo test`; `make test` runs them, or \
         `RUST_TEST_THREADS=1 cargo test -p tally-tests --test stack` with the stack up \
         (Kafka at {kafka} {}, ClickHouse at {clickhouse} {})",
        state(kafka.split(',').any(answers)),
        state(answers(clickhouse_host)),
    );
}
