//! Tally's stack tests: one binary, each module a guarantee checked on the real parts.
//!
//! Needs, besides the workspace built (`cargo build --workspace`: the tests start
//! `tally-ingest` and `tally-aggregator` processes from it):
//! - Kafka at `TALLY_TEST_KAFKA` (default `127.0.0.1:9092`) and ClickHouse at
//!   `TALLY_TEST_CLICKHOUSE` (default `http://127.0.0.1:8123`), as `deploy/local/stack.sh
//!   start` runs them; every test makes its own topics and database there;
//! - for the outage tests (`clickhouse_outage`, `kafka_outage`, `quota_view`), the installed
//!   Kafka and ClickHouse of `deploy/local/stack.sh install`: they start private ones on free
//!   ports and stop them mid-test.
//!
//! A plain `cargo test` does not run them (this target has `test = false`) and says so in one
//! line; `make test` does, one test at a time:
//! `RUST_TEST_THREADS=1 cargo test -p tally-tests --test stack [name]`.

mod clickhouse_outage;
mod crash;
mod dead_letter;
mod devstack;
mod end_to_end;
mod hostile;
mod http_edge;
mod kafka_outage;
mod otlp;
mod partitions;
mod quota;
mod quota_view;
mod read_api;
mod read_vectors;
mod rebalance;
mod rebuild;
mod retention;
mod sdk_vectors;
