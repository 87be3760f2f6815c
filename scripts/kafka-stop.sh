#!/usr/bin/env bash
# Stops the broker started by scripts/kafka-start.sh [port] and removes its data.
# Usage: scripts/kafka-stop.sh [port]     (default 19092)
# With KAFKA_KEEP_DATA=1 the data stays, for scripts/kafka-start.sh to restart on.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kafka_home="${KAFKA_HOME_DIR:-$repo_root/.kafka}"
port="${1:-19092}"
run_dir="$kafka_home/run-$port"
if [[ -f "$run_dir/kafka.pid" ]]; then
  pid="$(cat "$run_dir/kafka.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "kafka-stop: pid $pid still running after 30 s, killing" >&2
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
fi
if [[ "${KAFKA_KEEP_DATA:-0}" == 1 ]]; then
  rm -f "$run_dir/kafka.pid"
  echo "kafka-stop: stopped broker on port $port, kept $run_dir" >&2
  exit 0
fi
rm -rf "$run_dir"
echo "kafka-stop: stopped broker on port $port, removed $run_dir" >&2
