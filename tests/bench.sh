#!/usr/bin/env bash
# `make bench`: release builds on the local stack, each part on a fresh topic and database.
#  1. write path: tally-loadgen posts batches of 100 realistic events as fast as ingest answers
#     for 30 s: accepted events/s, p50/p99 latency, time until ClickHouse holds every event;
#  2. freshness: 20,000 events/s for 30 s with a probe session every 250 ms: post → rollup
#     readable through the read API, p50/p99;
#  3. ingest alone (aggregator stopped) at batch sizes 1, 10, 100 and 1000, gzip off and on,
#     and a bare rdkafka producer sending the same records to the same broker: the ceiling;
#  4. fold: tally-foldbench, the aggregator alone on a preloaded topic, next to the rate at
#     which ClickHouse takes the same rows inserted directly; then again with the aggregator's
#     filter of rows that cannot exist turned off, to show what it saves;
#  5. quota: tally-quotabench fills ingest's quota view with 10,000 accounts (memory per
#     account), then checks at 20,000/s over HTTP (p50/p99 from each request's scheduled
#     start) and as fast as ingest answers;
#  6. read API: tally-readbench writes 10 million events over 30 days straight into a
#     database of its own (raw events and every rollup, folded as the aggregator folds them;
#     through Kafka it would take several times as long), then times a session's timeline and the 30-day
#     metrics through ingest, says where the time goes, reports the size on disk, and drops it;
#  7. state: tally-statebench posts one event per new session, accounts round-robin over four
#     projects, through ingest (release processes of their own) and reports both processes'
#     memory once every event is folded and every account is in ingest's quota view.
# BENCH_SECONDS, BENCH_MATRIX_SECONDS, BENCH_BATCH, BENCH_CONCURRENCY, BENCH_RATE,
# BENCH_FOLD_SESSIONS, BENCH_QUOTA_ACCOUNTS, BENCH_QUOTA_RATE, BENCH_READ_EVENTS,
# BENCH_STATE_SESSIONS and BENCH_STATE_ACCOUNTS change it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${TALLY_STATE_DIR:-$REPO/.tally}"
STACK="$REPO/deploy/local/stack.sh"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
cd "$REPO"

bash "$STACK" install
cargo build --release --locked -p tally-ingest -p tally-aggregator -p tally-tests

started=()
pids=()
run_id="$(date +%s)"
database="tally_bench_$run_id"
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  curl -s "http://127.0.0.1:${TALLY_CLICKHOUSE_HTTP_PORT:-8123}/" --data-binary "DROP DATABASE IF EXISTS $database" >/dev/null || true
  for part in "${started[@]}"; do bash "$STACK" stop "$part" || true; done
}
trap cleanup EXIT
for part in clickhouse kafka; do
  if [[ "$(bash "$STACK" status)" != *"$part: running"* ]]; then
    bash "$STACK" start "$part"; started+=("$part")
  fi
done

bench="$STATE/bench"
mkdir -p "$bench"
key="bench_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
hash="$(printf %s "$key" | sha256sum | cut -d' ' -f1)"
printf 'listen = "127.0.0.1:18090"\n[rate_limit]\nrequests_per_second = 0.0\nevents_per_second = 0.0\n[[projects]]\nid = "bench"\nkeys = [{ sha256 = "%s", scopes = ["ingest", "read"] }]\n' "$hash" >"$bench/ingest.toml"
export TALLY_KAFKA__EVENTS_TOPIC="tally.bench.$run_id" TALLY_CLICKHOUSE__DATABASE="$database"

TALLY_LISTEN=127.0.0.1:18091 TALLY_GROUP_ID="tally-bench-$run_id" RUST_LOG=warn \
  "$TARGET/release/tally-aggregator" >"$bench/aggregator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do curl -sf http://127.0.0.1:18091/healthz >/dev/null && break; sleep 0.5; done
RUST_LOG=warn "$TARGET/release/tally-ingest" --config "$bench/ingest.toml" >"$bench/ingest.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do curl -sf http://127.0.0.1:18090/readyz >/dev/null && break; sleep 0.5; done

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%F)"
echo "== 1. write path, as fast as answers come"
"$TARGET/release/tally-loadgen" --url http://127.0.0.1:18090 --key "$key" --project bench \
  --duration-secs "${BENCH_SECONDS:-30}" --batch-size "${BENCH_BATCH:-100}" \
  --concurrency "${BENCH_CONCURRENCY:-8}" \
  --clickhouse-url "http://127.0.0.1:${TALLY_CLICKHOUSE_HTTP_PORT:-8123}" --database "$database"
echo "== 2. freshness at ${BENCH_RATE:-20000} events/s"
"$TARGET/release/tally-loadgen" --url http://127.0.0.1:18090 --key "$key" --project bench --seed 2 \
  --duration-secs "${BENCH_SECONDS:-30}" --batch-size "${BENCH_BATCH:-100}" \
  --concurrency "${BENCH_CONCURRENCY:-8}" --rate "${BENCH_RATE:-20000}" --probe-every-ms 250
# Ingest alone: the aggregator stops so it does not compete for the cores.
kill -TERM "${pids[0]}" 2>/dev/null || true; wait "${pids[0]}" 2>/dev/null || true
echo "== 3. ingest alone: batch sizes and gzip, ${BENCH_MATRIX_SECONDS:-10} s each, next to a bare producer"
for batch in 1 10 100 1000; do
  for gzip in "" "--gzip"; do
    "$TARGET/release/tally-loadgen" --url http://127.0.0.1:18090 --key "$key" --project bench --seed 3 \
      --duration-secs "${BENCH_MATRIX_SECONDS:-10}" --batch-size "$batch" --concurrency "${BENCH_CONCURRENCY:-8}" $gzip \
      | grep -E "batch_size|events_per_sec|latency"
  done
done
"$TARGET/release/tally-producerbench" --duration-secs "${BENCH_MATRIX_SECONDS:-10}" --batch-size 100 \
  --brokers "127.0.0.1:${TALLY_KAFKA_PORT:-9092}"
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
pids=()
echo "== 4. fold rate against direct inserts"
"$TARGET/release/tally-foldbench" --sessions "${BENCH_FOLD_SESSIONS:-30000}"
echo "== 4b. the same, without the aggregator's filter of rows that cannot exist (max_known_keys = 0)"
"$TARGET/release/tally-foldbench" --sessions "${BENCH_FOLD_SESSIONS:-30000}" --max-known-keys 0
echo "== 5. quota checks over HTTP, ${BENCH_QUOTA_ACCOUNTS:-10000} accounts in the view"
quota_topic="tally.bench.$run_id.quota"
TALLY_KAFKA__QUOTA_TOPIC="$quota_topic" RUST_LOG=warn \
  "$TARGET/release/tally-ingest" --config "$bench/ingest.toml" >"$bench/ingest-quota.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do curl -sf http://127.0.0.1:18090/readyz >/dev/null && break; sleep 0.5; done
"$TARGET/release/tally-quotabench" --url http://127.0.0.1:18090 --key "$key" --project bench \
  --pid "${pids[-1]}" --brokers "127.0.0.1:${TALLY_KAFKA_PORT:-9092}" --quota-topic "$quota_topic" \
  --accounts "${BENCH_QUOTA_ACCOUNTS:-10000}" --rate "${BENCH_QUOTA_RATE:-20000}" \
  --duration-secs "${BENCH_SECONDS:-30}"
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
pids=()
echo "== 6. read API on ${BENCH_READ_EVENTS:-10000000} events over 30 days"
TALLY_TEST_CLICKHOUSE="http://127.0.0.1:${TALLY_CLICKHOUSE_HTTP_PORT:-8123}" \
  TALLY_TEST_KAFKA="127.0.0.1:${TALLY_KAFKA_PORT:-9092}" \
  "$TARGET/release/tally-readbench" --events "${BENCH_READ_EVENTS:-10000000}"
echo "== 7. memory of ingest and the aggregator: ${BENCH_STATE_SESSIONS:-300000} sessions, ${BENCH_STATE_ACCOUNTS:-30000} accounts"
TALLY_TEST_CLICKHOUSE="http://127.0.0.1:${TALLY_CLICKHOUSE_HTTP_PORT:-8123}" \
  TALLY_TEST_KAFKA="127.0.0.1:${TALLY_KAFKA_PORT:-9092}" \
  "$TARGET/release/tally-statebench" --sessions "${BENCH_STATE_SESSIONS:-300000}" \
  --accounts "${BENCH_STATE_ACCOUNTS:-30000}"
