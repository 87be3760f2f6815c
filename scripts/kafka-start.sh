#!/usr/bin/env bash
# Starts a single-node Apache Kafka 4.x broker (KRaft: broker + controller in
# one JVM) on 127.0.0.1, for the integration tests and `clv bench` ceilings.
# Needs the jars from scripts/kafka-fetch.sh (run first; this script runs it
# when they are missing). Data and logs live under .kafka/run-PORT/ and are
# removed by scripts/kafka-stop.sh. With KAFKA_KEEP_DATA=1 (set for both
# scripts) a stopped broker starts again on its kept data: a broker restart,
# not a new cluster.
#
# Usage: scripts/kafka-start.sh [port]        (default 19092; controller on port+1)
# Prints the bootstrap address (127.0.0.1:PORT) on stdout when ready, e.g.
#   export CLV_REAL_KAFKA=$(scripts/kafka-start.sh)
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kafka_home="${KAFKA_HOME_DIR:-$repo_root/.kafka}"
port="${1:-19092}"
controller_port=$((port + 1))
run_dir="$kafka_home/run-$port"
libs="$kafka_home/libs"

log() { echo "kafka-start: $*" >&2; }

if ! compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
  "$repo_root/scripts/kafka-fetch.sh" >&2
fi
if [[ -f "$run_dir/kafka.pid" ]] && kill -0 "$(cat "$run_dir/kafka.pid")" 2>/dev/null; then
  log "already running (pid $(cat "$run_dir/kafka.pid"))"
  echo "127.0.0.1:$port"
  exit 0
fi
java_opts=(-Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$run_dir/log4j2.properties")
if [[ "${KAFKA_KEEP_DATA:-0}" == 1 && -f "$run_dir/data/meta.properties" && -f "$run_dir/server.properties" ]]; then
  log "restarting on the kept data in $run_dir/data"
else  # a new cluster: fresh config and storage (not indented: heredocs below)
rm -rf "$run_dir"
mkdir -p "$run_dir/data"

cat >"$run_dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$run_dir/data
num.partitions=8
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
PROPS

cat >"$run_dir/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $run_dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
PROPS

cluster_id="$(java "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
java "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool format \
  -t "$cluster_id" -c "$run_dir/server.properties" >"$run_dir/format.log" 2>&1 ||
  { log "storage format failed:"; cat "$run_dir/format.log" >&2; exit 1; }
fi

nohup java "${java_opts[@]}" -cp "$libs/*" kafka.Kafka "$run_dir/server.properties" \
  >"$run_dir/stdout.log" 2>&1 &
echo $! >"$run_dir/kafka.pid"
log "started pid $(cat "$run_dir/kafka.pid"), logs in $run_dir"

for _ in $(seq 1 120); do
  if ! kill -0 "$(cat "$run_dir/kafka.pid")" 2>/dev/null; then
    log "broker exited; last lines of its logs:"
    tail -20 "$run_dir/stdout.log" "$run_dir/server.log" >&2 2>/dev/null || true
    exit 1
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    if ! command -v kcat >/dev/null || kcat -b "127.0.0.1:$port" -L -m 5 >/dev/null 2>&1; then
      log "ready on 127.0.0.1:$port"
      echo "127.0.0.1:$port"
      exit 0
    fi
  fi
  sleep 0.5
done
log "broker did not answer on 127.0.0.1:$port within 60 s (see $run_dir)"
exit 1
