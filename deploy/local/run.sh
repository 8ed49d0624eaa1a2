#!/usr/bin/env bash
# `make run`: the whole stack on 127.0.0.1 — Kafka, ClickHouse, tally-aggregator, tally-ingest —
# with a demo project whose key is generated here and stored only as a hash in the config.
# Idempotent: what already runs is left alone. `make stop` ends it all.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STATE="${TALLY_STATE_DIR:-$REPO/.tally}"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
DEMO="$STATE/demo"

bash "$HERE/stack.sh" install
bash "$HERE/stack.sh" start all
(cd "$REPO" && cargo build --release --locked -p tally-ingest -p tally-aggregator)

mkdir -p "$DEMO" "$STATE/run" "$STATE/logs"
if [[ ! -f "$DEMO/key" ]]; then
  (umask 077; echo "tally_demo_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$DEMO/key")
fi
KEY="$(cat "$DEMO/key")"
HASH="$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)"
{
  cat "$HERE/ingest.toml"
  printf '\n[[projects]]\nid = "demo"\nkeys = [{ sha256 = "%s", scopes = ["ingest", "read", "admin"] }]\n' "$HASH"
} >"$DEMO/ingest.toml"

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_ready() { # wait_ready NAME URL PIDFILE
  for _ in $(seq 1 120); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$2")" == 200 ]] && return 0
    alive "$3" || { echo "$1 exited; see $STATE/logs/$1.log" >&2; tail -5 "$STATE/logs/$1.log" >&2; return 1; }
    sleep 0.5
  done
  echo "$1 not ready after 60 s; see $STATE/logs/$1.log" >&2; return 1
}

start_service() { # start_service NAME CONFIG READY_URL (quota.toml is read after CONFIG)
  local pidfile="$STATE/run/$1.pid"
  if alive "$pidfile"; then echo "[run] $1 already running (pid $(cat "$pidfile"))" >&2; return 0; fi
  echo "[run] starting $1" >&2
  nohup "$TARGET/release/tally-$1" --config "$2" --config "$HERE/quota.toml" >>"$STATE/logs/$1.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_ready "$1" "$3" "$pidfile"
}

# The aggregator applies migrations and creates the topic, so it goes first.
start_service aggregator "$HERE/aggregator.toml" "http://127.0.0.1:8081/healthz"
start_service ingest "$DEMO/ingest.toml" "http://127.0.0.1:8080/readyz"

cat <<MSG

Tally is running.
  ingest      http://127.0.0.1:8080   (logs: $STATE/logs/ingest.log)
  aggregator  http://127.0.0.1:8081   (/metrics, /readyz)
  ClickHouse  http://127.0.0.1:8123   Kafka 127.0.0.1:9092
  demo key    $KEY   (project "demo"; stored hashed in $DEMO/ingest.toml)

Post a small batch:
  curl -s http://127.0.0.1:8080/v1/batch -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
    -d '{"batch": [{"event_id": "'\$(cat /proc/sys/kernel/random/uuid)'", "type": "llm_response", "timestamp": "'\$(date -u +%FT%T.000Z)'", "session_id": "demo-session", "account_id": "acct-1", "model": "gpt-4o", "provider": "openai", "usage": {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 1000, "cache_write_tokens": 0}, "cost_usd": 0.0021, "duration_ms": 840}]}'

Read its timeline and rollup back:
  curl -s http://127.0.0.1:8080/v1/sessions/demo-session/timeline -H "Authorization: Bearer $KEY"
  curl -s http://127.0.0.1:8080/v1/sessions/demo-session -H "Authorization: Bearer $KEY"

Ask before an LLM call, and see the account's usage (the demo key is also its admin key):
  curl -s http://127.0.0.1:8080/v1/quota/check -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
    -d '{"account_id": "acct-1", "model": "gpt-4o", "estimated_tokens": 2000}'
  curl -s http://127.0.0.1:8080/v1/usage/acct-1 -H "Authorization: Bearer $KEY"
  curl -s -X PUT http://127.0.0.1:8080/v1/admin/accounts/acct-1 -H "Authorization: Bearer $KEY" -d '{"plan": "pro"}'

Stop everything: make stop
MSG
