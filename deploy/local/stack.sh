#!/usr/bin/env bash
# The local Tally stack: Apache Kafka (KRaft, single node) and ClickHouse on 127.0.0.1.
#
#   stack.sh install              install what is missing (Debian packages, Kafka jars, test tools)
#   stack.sh start [kafka|clickhouse|all]   start (idempotent: a running part is left alone)
#   stack.sh stop  [kafka|clickhouse|all]   stop exactly the processes this script started (pid files)
#   stack.sh status
#
# Everything lives under one folder, $TALLY_STATE_DIR (default: .tally in the repository).
# Ports: TALLY_KAFKA_PORT (9092), TALLY_KAFKA_CONTROLLER_PORT (9093),
#        TALLY_CLICKHOUSE_HTTP_PORT (8123), TALLY_CLICKHOUSE_TCP_PORT (9000).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STATE="${TALLY_STATE_DIR:-$REPO/.tally}"
KAFKA_PORT="${TALLY_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${TALLY_KAFKA_CONTROLLER_PORT:-9093}"
CH_HTTP_PORT="${TALLY_CLICKHOUSE_HTTP_PORT:-8123}"
CH_TCP_PORT="${TALLY_CLICKHOUSE_TCP_PORT:-9000}"
KAFKA_LIBS="${TALLY_KAFKA_LIBS:-$STATE/kafka-libs}"
VENV="$STATE/venv"

log() { echo "[stack] $*" >&2; }

alive() { # alive PIDFILE: the recorded process is running
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_free() { # port_free PORT: fail, saying so, when another process listens there
  if port_open "$1"; then log "port $1 is already in use by a process this script did not start"; return 1; fi
}

install_debian() {
  local missing=()
  command -v clickhouse-server >/dev/null || missing+=(clickhouse-server clickhouse-client)
  command -v curl >/dev/null || missing+=(curl)
  # promtool (from Debian's prometheus package) checks the services' metrics in the tests.
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v java >/dev/null || missing+=(default-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  command -v python3 >/dev/null || missing+=(python3 python3-venv)
  # Building librdkafka (through the rdkafka crate) needs cmake and curl's headers.
  command -v cmake >/dev/null || missing+=(cmake)
  [[ -f /usr/include/x86_64-linux-gnu/curl/curl.h || -f /usr/include/curl/curl.h ]] || missing+=(libcurl4-openssl-dev)
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    # The packages must not start system services: the stack runs its own processes.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
}

install_kafka() {
  [[ -f "$KAFKA_LIBS/.complete" ]] && return 0
  log "resolving Kafka jars with Maven (deploy/local/kafka-pom.xml)"
  mkdir -p "$KAFKA_LIBS"
  mvn -q -B -f "$HERE/kafka-pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime
  touch "$KAFKA_LIBS/.complete"
}

install_python() {
  # The marker holds the requirements' hash, so a changed list is installed again.
  local want; want="$(sha256sum "$REPO/tests/python/requirements.txt" | cut -d' ' -f1)"
  [[ "$(cat "$VENV/.complete" 2>/dev/null)" == "$want" ]] && return 0
  log "installing the test tools' Python environment (tests/python/requirements.txt)"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REPO/tests/python/requirements.txt"
  echo "$want" >"$VENV/.complete"
}

start_kafka() {
  local pidfile="$STATE/run/kafka.pid" conf="$STATE/kafka/server.properties"
  if alive "$pidfile"; then log "kafka already running (pid $(cat "$pidfile"))"; return 0; fi
  install_kafka
  mkdir -p "$STATE/kafka/data" "$STATE/logs" "$STATE/run"
  sed -e "s#@STATE@#$STATE#g" -e "s#@PORT@#$KAFKA_PORT#g" \
      -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" "$HERE/kafka-server.properties" >"$conf"
  local java_opts=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j.configuration=file:$HERE/kafka-log4j.properties" "-Dkafka.logs.dir=$STATE/logs")
  if [[ ! -f "$STATE/kafka/data/meta.properties" ]]; then
    [[ -f "$STATE/kafka/cluster-id" ]] || java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid >"$STATE/kafka/cluster-id"
    java "${java_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format \
      -t "$(cat "$STATE/kafka/cluster-id")" -c "$conf" >"$STATE/logs/kafka-format.log"
  fi
  port_free "$KAFKA_PORT" && port_free "$KAFKA_CONTROLLER_PORT" || return 1
  log "starting kafka on 127.0.0.1:$KAFKA_PORT"
  # A fresh log per start, so readiness is read from this run only.
  for f in kafka.log kafka.out; do [[ -f "$STATE/logs/$f" ]] && mv "$STATE/logs/$f" "$STATE/logs/$f.prev"; done
  nohup java "${java_opts[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$conf" \
    >>"$STATE/logs/kafka.out" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if port_open "$KAFKA_PORT" && cat "$STATE/logs/kafka.log" "$STATE/logs/kafka.out" 2>/dev/null | grep -q "Transition from STARTING to STARTED"; then
      log "kafka ready"; return 0
    fi
    alive "$pidfile" || { log "kafka exited; see $STATE/logs/kafka.out"; tail -20 "$STATE/logs/kafka.out" >&2; return 1; }
    sleep 0.5
  done
  log "kafka did not become ready in 60 s"; return 1
}

start_clickhouse() {
  local pidfile="$STATE/run/clickhouse.pid" dir="$STATE/clickhouse"
  if alive "$pidfile"; then log "clickhouse already running (pid $(cat "$pidfile"))"; return 0; fi
  install_debian
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$STATE/logs" "$STATE/run"
  sed -e "s#@STATE@#$STATE#g" -e "s#@HTTP_PORT@#$CH_HTTP_PORT#g" -e "s#@TCP_PORT@#$CH_TCP_PORT#g" \
    "$HERE/clickhouse-config.xml" >"$dir/config.xml"
  cp "$HERE/clickhouse-users.xml" "$dir/users.xml"
  port_free "$CH_HTTP_PORT" && port_free "$CH_TCP_PORT" || return 1
  log "starting clickhouse on 127.0.0.1:$CH_HTTP_PORT (http) and :$CH_TCP_PORT (native)"
  # exec: the recorded pid is the server's own, so stop ends exactly it.
  (cd "$dir" && exec nohup clickhouse-server --config-file="$dir/config.xml" \
    >>"$STATE/logs/clickhouse.out" 2>&1 </dev/null) &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if [[ "$(curl -s "http://127.0.0.1:$CH_HTTP_PORT/ping" 2>/dev/null)" == "Ok." ]]; then
      log "clickhouse ready"; return 0
    fi
    alive "$pidfile" || { log "clickhouse exited; see $STATE/logs"; tail -20 "$STATE/logs/clickhouse.err.log" >&2 || true; return 1; }
    sleep 0.5
  done
  log "clickhouse did not become ready in 60 s"; return 1
}

stop_one() { # stop_one NAME
  local pidfile="$STATE/run/$1.pid"
  if ! alive "$pidfile"; then rm -f "$pidfile"; return 0; fi
  local pid; pid="$(cat "$pidfile")"
  log "stopping $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "$1 did not stop in 30 s; killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
}

status() {
  for name in kafka clickhouse ingest aggregator; do
    if alive "$STATE/run/$name.pid"; then echo "$name: running (pid $(cat "$STATE/run/$name.pid"))"
    else echo "$name: stopped"; fi
  done
}

cmd="${1:-}"; what="${2:-all}"
case "$cmd" in
  install) install_debian; install_kafka; install_python ;;
  start)
    case "$what" in
      kafka) install_debian; start_kafka ;;
      clickhouse) start_clickhouse ;;
      all) install_debian; start_clickhouse; start_kafka ;;
      *) echo "unknown part: $what" >&2; exit 2 ;;
    esac ;;
  stop)
    case "$what" in
      all) stop_one aggregator; stop_one ingest; stop_one kafka; stop_one clickhouse ;;
      *) stop_one "$what" ;;
    esac ;;
  status) status ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
