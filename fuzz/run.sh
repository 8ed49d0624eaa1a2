#!/usr/bin/env bash
# Fuzzes ingest's body parsing: `bash fuzz/run.sh [runs]` (default 1,000,000 inputs).
# Installs cargo-fuzz when missing; uses the nightly toolchain when rustup has it, otherwise
# the stable one with RUSTC_BOOTSTRAP=1 (cargo fuzz passes nightly-only flags).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
RUNS="${1:-1000000}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
mkdir -p corpus/batch_body
printf '\0{"batch":[{"event_id":"0193a1b2-0000-7000-8000-000000000001","type":"llm_response","timestamp":"2026-11-18T10:00:00Z","session_id":"s","account_id":"a","model":"gpt-4o","provider":"openai","usage":{"input_tokens":10},"content":[[1]]}]}' >corpus/batch_body/seed.json
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi
cargo "${toolchain[@]}" fuzz run batch_body corpus/batch_body -- -runs="$RUNS" -max_len=65536
