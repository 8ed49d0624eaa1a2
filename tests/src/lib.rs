//! Test support for Tally's end-to-end tests and load generator: a realistic workload; the
//! private names (topics, database, group, keys) every test stack gets, and `tally-devstack`'s
//! stack of service processes for the Python and TypeScript suites ([`devstack`]); an
//! environment that runs ingest and the aggregator in-process against the real local stack
//! ([`env`]); aggregator processes on a
//! private topic ([`processes`]); private Kafka and ClickHouse servers for the outage tests
//! ([`private_stack`]); ground truths computed apart from the fold ([`read_truth`],
//! [`replay`]). The tests themselves are in `tests/stack/` (one binary) and the benchmark
//! tools in `src/bin/`.

pub mod devstack;
pub mod env;
pub mod private_stack;
pub mod processes;
pub mod quota_checks;
pub mod read_truth;
pub mod replay;
pub mod vectors;
pub mod workload;

pub use env::TestEnv;
