#!/usr/bin/env bash
# A single-node Kafka broker on loopback (KRaft: one process is broker and controller), from
# the Kafka jars that 'beam-tally engines install kafka' resolves with Maven. No Docker.
#
#   scripts/kafka.sh start    waits until the broker takes requests; last line: HOST:PORT
#   scripts/kafka.sh stop     stops only the broker that 'start' started (its data stays)
#   scripts/kafka.sh status   HOST:PORT and exit 0 if it runs, exit 1 if not
#
# start and stop are idempotent; a start after a stop keeps the same port and the topics, so
# producers and consumers that retry reconnect to the same address. Data, config, pid file and
# log live in $BEAM_TALLY_KAFKA (default: the engines cache's kafka-broker folder), so a
# test's broker and a user's never touch each other. The JVM heap is 512 MiB.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
START_TIMEOUT="${BEAM_TALLY_KAFKA_START_TIMEOUT:-120}"

usage() { echo "usage: scripts/kafka.sh start|stop|status" >&2; exit 2; }
[ $# -eq 1 ] || usage
ACTION="$1"
case "$ACTION" in start|stop|status) ;; *) usage ;; esac

source "$ROOT/scripts/ensure_venv.sh"
PY="$VENV/bin/python"
CACHE="$("$PY" -c 'from beam_tally.engines import cache_root; print(cache_root())')"
STATE="${BEAM_TALLY_KAFKA:-$CACHE/kafka-broker}"
mkdir -p "$STATE"
PIDFILE="$STATE/broker.pid"

# The broker answers a metadata request on its bootstrap address.
ready() {
  [ -f "$STATE/address" ] && [ -f "$PIDFILE" ] || return 1
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || return 1
  "$PY" - "$(cat "$STATE/address")" <<'EOF'
import sys
from confluent_kafka.admin import AdminClient
from confluent_kafka import KafkaException
admin = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0})
try:
    sys.exit(0 if admin.list_topics(timeout=2).brokers else 1)
except KafkaException:
    sys.exit(1)
EOF
}

stop() {
  local pid
  [ -f "$PIDFILE" ] || return 0
  pid="$(cat "$PIDFILE")"
  # Only our broker: the pid must still be a java running this state folder's config.
  if kill -0 "$pid" 2>/dev/null && grep -q "$STATE/server.properties" "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do  # up to 15 s for a clean shutdown, then SIGKILL
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

case "$ACTION" in
  status)
    if ready; then cat "$STATE/address"; exit 0; fi
    echo "no Kafka broker runs from $STATE" >&2
    exit 1
    ;;
  stop)
    stop
    echo "Kafka broker stopped ($STATE)" >&2
    exit 0
    ;;
esac

if ready; then
  echo "Kafka broker already running ($STATE)" >&2
  cat "$STATE/address"
  exit 0
fi
stop  # leftovers of a broker that died or never became ready
KAFKA_HOME="$("$VENV/bin/beam-tally" engines install kafka | awk '{print $2}')"
# Ports are picked once per state folder and kept: a restarted broker has the same address.
if [ ! -f "$STATE/ports" ]; then
  "$PY" - > "$STATE/ports" <<'EOF'
import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
EOF
fi
read -r PORT CONTROLLER < "$STATE/ports"
cat > "$STATE/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$STATE/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
group.initial.rebalance.delay.ms=0
log.message.timestamp.type=CreateTime
# Record timestamps are event times, maybe years old: nothing is deleted or rolled for age.
log.retention.ms=-1
log.roll.ms=9223372036854775807
# Records up to 8 MiB: a tally document may be ~4 MiB (beam_tally/io/kafka.py MAX_RECORD_BYTES).
message.max.bytes=8388608
# A topic is made by the producer, with its --partitions; a consumer never makes one by accident.
auto.create.topics.enable=false
EOF
cat > "$STATE/log4j2.properties" <<EOF
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = $STATE/broker.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
EOF
JAVA=(java -Xmx512m -Xms128m -XX:+UseSerialGC "-Dlog4j2.configurationFile=$STATE/log4j2.properties"
      -cp "$KAFKA_HOME/lib/*")
if [ ! -f "$STATE/data/meta.properties" ]; then
  CLUSTER_ID="$("$PY" -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
  "${JAVA[@]}" kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$STATE/server.properties" \
    >"$STATE/format.log" 2>&1 || { cat "$STATE/format.log" >&2; exit 1; }
fi
echo "127.0.0.1:$PORT" > "$STATE/address"
# Its own session, in the state folder: a caller's process group ending does not stop it.
cd "$STATE"
echo "starting a Kafka $(basename "$KAFKA_HOME") broker on 127.0.0.1:$PORT (data in $STATE/data)" >&2
setsid "${JAVA[@]}" kafka.Kafka "$STATE/server.properties" </dev/null >>"$STATE/broker.out" 2>&1 &
echo $! > "$PIDFILE"
deadline=$((SECONDS + START_TIMEOUT))
until ready; do
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "the Kafka broker did not take requests within ${START_TIMEOUT} s; its log:" >&2
    tail -n 20 "$STATE/broker.log" "$STATE/broker.out" >&2 || true
    stop
    exit 1
  fi
  sleep 0.5
done
cat "$STATE/address"
