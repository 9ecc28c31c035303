#!/usr/bin/env bash
# A standalone Flink cluster on loopback: a JobManager and a TaskManager with two slots, separate
# JVMs, from the Flink distribution that 'beam-tally engines install flink-cluster' assembles
# from PyPI (the Flink version Beam's job server is built for).
#
# BEAM_TALLY_FLINK_TASKMANAGERS=2 starts two TaskManagers of one slot each instead: then run
# the jobs with --environment_type=PROCESS (see README). With the default LOOPBACK harness,
# Beam numbers its SDK workers per TaskManager JVM ("1-1", "1-2"...), so two TaskManagers ask
# the launcher's one worker pool for the same worker ids, and one stops the other's worker
# ("SDK harness closed connection"; reproduced with Beam 2.62's job server).
#
#   scripts/flink_cluster.sh start    waits until both slots take jobs; last line: HOST:PORT
#   scripts/flink_cluster.sh stop     stops only the processes that 'start' started
#   scripts/flink_cluster.sh status   HOST:PORT and exit 0 if it runs, exit 1 if not
#
# start and stop are idempotent. The jobs then run with
#   beam-tally tally ... --runner=FlinkRunner --flink_master=HOST:PORT --parallelism=2
# Config, pid files and logs live in $BEAM_TALLY_FLINK_CLUSTER (default: the engines cache's
# flink-cluster folder), so a test's cluster and a user's never touch each other.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
START_TIMEOUT="${BEAM_TALLY_FLINK_START_TIMEOUT:-180}"
TASKMANAGERS="${BEAM_TALLY_FLINK_TASKMANAGERS:-1}"
case "$TASKMANAGERS" in 1) SLOTS=2 ;; 2) SLOTS=1 ;; *) echo "BEAM_TALLY_FLINK_TASKMANAGERS: 1 or 2" >&2; exit 2 ;; esac

usage() { echo "usage: scripts/flink_cluster.sh start|stop|status" >&2; exit 2; }
[ $# -eq 1 ] || usage
ACTION="$1"
case "$ACTION" in start|stop|status) ;; *) usage ;; esac

source "$ROOT/scripts/ensure_venv.sh"
PY="$VENV/bin/python"
CACHE="$("$PY" -c 'from beam_tally.engines import cache_root; print(cache_root())')"
STATE="${BEAM_TALLY_FLINK_CLUSTER:-$CACHE/flink-cluster}"
mkdir -p "$STATE"
export FLINK_CONF_DIR="$STATE/conf" FLINK_LOG_DIR="$STATE/log" FLINK_PID_DIR="$STATE/pids"

# The REST address answers /overview with the TaskManagers registered and both slots there
# (free too, with "free": what the start-up waits for; a running job keeps them busy).
ready() {
  [ -f "$STATE/address" ] || return 1
  "$PY" - "$(cat "$STATE/address")" "$TASKMANAGERS" "${1:-}" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://{sys.argv[1]}/overview", timeout=2) as answer:
        overview = json.load(answer)
except (OSError, ValueError):
    sys.exit(1)
wanted, slots = int(sys.argv[2]), "slots-available" if sys.argv[3] == "free" else "slots-total"
sys.exit(0 if overview["taskmanagers"] >= wanted and overview[slots] >= 2 else 1)
EOF
}

# The pids in our pid files that are still our Flink daemons: a pid file outlives a crash or a
# reboot, and its pid may since belong to another process, which must not be killed.
pids() {
  local pid
  for pid in $(cat "$FLINK_PID_DIR"/*.pid 2>/dev/null || true); do
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$FLINK_CONF_DIR"; then
      echo "$pid"
    fi
  done
}

stop() {
  local pid alive
  for pid in $(pids); do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do  # up to 10 s for a clean shutdown, then SIGKILL
    alive=""
    for pid in $(pids); do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
    [ -z "$alive" ] && break
    sleep 0.2
  done
  for pid in $alive; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$FLINK_PID_DIR" "$STATE/address"
}

case "$ACTION" in
  status)
    if ready; then cat "$STATE/address"; exit 0; fi
    echo "no Flink cluster runs from $STATE" >&2
    exit 1
    ;;
  stop)
    stop
    echo "Flink cluster stopped ($STATE)" >&2
    exit 0
    ;;
esac

if ready; then
  echo "Flink cluster already running ($STATE)" >&2
  cat "$STATE/address"
  exit 0
fi
stop  # leftovers of a cluster that died or never became ready
FLINK_HOME="$("$VENV/bin/beam-tally" engines install flink-cluster | awk '{print $2}')"
rm -rf "$FLINK_CONF_DIR" "$FLINK_LOG_DIR"
mkdir -p "$FLINK_CONF_DIR" "$FLINK_LOG_DIR" "$FLINK_PID_DIR"
cp "$FLINK_HOME"/conf/log4j*.properties "$FLINK_CONF_DIR/"
# Flink's own config with everything bound to loopback, free ports and small memory.
"$PY" - "$FLINK_HOME/conf/config.yaml" "$FLINK_CONF_DIR/config.yaml" "$STATE/address" "$SLOTS" <<'EOF'
import socket, sys
import yaml

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

with open(sys.argv[1]) as f:
    config = yaml.safe_load(f)
rest, rpc = free_port(), free_port()
config["jobmanager"].update(
    {"bind-host": "127.0.0.1", "rpc": {"address": "127.0.0.1", "port": rpc},
     "memory": {"process": {"size": "1024m"}}})
config["taskmanager"].update(
    {"bind-host": "127.0.0.1", "host": "127.0.0.1", "numberOfTaskSlots": int(sys.argv[4]),
     # Beam's graphs hold many shuffles, each taking network buffers in every slot.
     "memory": {"process": {"size": "2048m"},
                "network": {"min": "256m", "max": "256m"}}})
config["rest"] = {"address": "127.0.0.1", "bind-address": "127.0.0.1", "port": rest}
config["parallelism"] = {"default": 1}
config["blob"] = {"server": {"port": "0"}}
with open(sys.argv[2], "w") as f:
    yaml.safe_dump(config, f)
with open(sys.argv[3], "w") as f:
    f.write(f"127.0.0.1:{rest}\n")
EOF
# The daemons (and the SDK workers they start) run in the state folder, never in a checkout
# whose packages a worker's `python -m` would import instead of the ones shipped to it.
cd "$STATE"
echo "starting a Flink cluster from $FLINK_HOME: a JobManager, $TASKMANAGERS TaskManager(s), 2 slots" >&2
"$FLINK_HOME/bin/jobmanager.sh" start >/dev/null
for _ in $(seq 1 "$TASKMANAGERS"); do "$FLINK_HOME/bin/taskmanager.sh" start >/dev/null; done
deadline=$((SECONDS + START_TIMEOUT))
until ready free; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "the Flink cluster did not take jobs within ${START_TIMEOUT} s; its logs:" >&2
    tail -n 20 "$FLINK_LOG_DIR"/*.log >&2 || true
    stop
    exit 1
  fi
  sleep 1
done
cat "$STATE/address"
