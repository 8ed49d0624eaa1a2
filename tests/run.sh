#!/usr/bin/env bash
# `make test`: install what is missing, start the parts of the local stack that are not
# running, run every test (Rust unit, integration and end-to-end; the cross-engine SQL test),
# then stop what this script started.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${TALLY_STATE_DIR:-$REPO/.tally}"
STACK="$REPO/deploy/local/stack.sh"
cd "$REPO"

bash "$STACK" install
cargo build --locked --workspace --all-targets

started=()
stop_started() {
  for part in "${started[@]}"; do bash "$STACK" stop "$part" || true; done
}
trap stop_started EXIT
for part in clickhouse kafka; do
  if [[ "$(bash "$STACK" status)" != *"$part: running"* ]]; then
    bash "$STACK" start "$part"
    started+=("$part")
  fi
done

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# Unit and property tests (a plain `cargo test` runs these alone, and says the stack tests
# were left out), then the stack tests, one at a time: some stop services of their own.
cargo test --locked --workspace
cargo clippy --locked -p tally-tests --test stack -- -D warnings
RUST_TEST_THREADS=1 cargo test --locked -p tally-tests --test stack
"$STATE/venv/bin/pytest" -q tests/python
"$STATE/venv/bin/pytest" -q sdks/python/tests
bash sdks/typescript/scripts/test.sh
