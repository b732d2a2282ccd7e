#!/usr/bin/env bash
# A job of 1, 2 and 3 processes, each in its own network namespace (veth pairs on a bridge made
# here and removed at the end), against the test broker (reached through socat forwarders, as
# the namespaces cannot see the machine's loopback): the whole job's events/s for each, beside one
# process of 3 workers on the machine's own stack; then the loss of a process: one of three killed
# (SIGKILL) halfway, how long the other two take to stop (they end by SIGKILL themselves: status
# 137), and how long the restarted cluster takes
# to restore and catch up to the end, beside what the uninterrupted run took for the same
# remainder. Prints one JSON line. Needs root (ip netns) and socat.
#
# Each process runs 1 worker. The stream is EVENTS (default 300,000) generated Criteo events on 6
# partitions (so 1, 2 and 3 processes split them evenly), read once with checkpoints every second.
# Run: perf/cluster.sh   (after `make test` has built tansu once)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release -p millrace-engine --quiet
BIN="$(realpath "$TARGET/release/millrace")"
EVENTS="${EVENTS:-300000}"
BROKER="${MILLRACE_TEST_BROKER:-127.0.0.1:19092}"
PORT="${BROKER##*:}"
TAG="mrp$(($$ % 1000))"
NET="10.214.$(($$ % 200 + 20))"
WORK="$(mktemp -d)"
# Checkpoints each process keeps beyond those another process may still need (the job's default).
KEEP="${KEEP:-3}"

cleanup() {
  pkill -f "socat TCP-LISTEN:$PORT,bind=" 2>/dev/null || true
  for i in 0 1 2; do
    ip link del "${TAG}v$i" 2>/dev/null || true
    ip netns del "${TAG}n$i" 2>/dev/null || true
  done
  ip link del "${TAG}br" 2>/dev/null || true
  scripts/test-broker.sh stop
  rm -rf "$WORK"
}
trap cleanup EXIT
scripts/test-broker.sh start

ip link add "${TAG}br" type bridge
ip addr add "$NET.1/24" dev "${TAG}br"
ip link set "${TAG}br" up
socat "TCP-LISTEN:$PORT,bind=$NET.1,fork,reuseaddr" "TCP:127.0.0.1:$PORT" 2>/dev/null &
for i in 0 1 2; do
  ns="${TAG}n$i"
  ip netns add "$ns"
  ip link add "${TAG}v$i" type veth peer name eth0 netns "$ns"
  ip link set "${TAG}v$i" master "${TAG}br" up
  ip -n "$ns" addr add "$NET.$((i + 2))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip netns exec "$ns" socat "TCP-LISTEN:$PORT,bind=127.0.0.1,fork,reuseaddr" "TCP:$NET.1:$PORT" \
    2>/dev/null &
done
sleep 0.5

topic="cluster-perf-$$"
"$BIN" gen criteo --rows "$EVENTS" --seed 3 >"$WORK/events.tsv" 2>/dev/null
"$BIN" produce "$WORK/events.tsv" --brokers "$BROKER" --topic "$topic" --partitions 6 >/dev/null 2>&1

# The job file of a run in $1 whose processes each read $2 records.
job_file() {
  cat >"$1/job.toml" <<EOF
name = "cluster"
[source]
type = "kafka"
bootstrap_servers = "$BROKER"
topic = "$topic"
group_id = "perf-$$-$(basename "$1")"
dead_letter_topic = "$topic-dead"
partitions = 6
idle_ms = 2000
stop_after_records = $2
[features]
type = "map"
[[features.transform]]
kind = "bucketize"
fields = ["I*"]
buckets = 20
[[features.transform]]
kind = "one_hot"
fields = ["C*"]
min_count = 5
capacity = 100000
[learner]
type = "ftrl"
alpha = 0.1
beta = 1.0
l1 = 0.5
l2 = 1.0
[publish]
registry = "$1/registry"
every_events = 10000000
every_seconds = 3600
[progress]
interval_ms = 0
[checkpoint]
state_dir = "$1/state"
interval_ms = 1000
keep = $KEEP
EOF
}

# Starts $2 processes of the run in $1 in their namespaces; their pids in $1/pids.
start() {
  local dir=$1 n=$2
  : >"$dir/hosts"
  for i in $(seq 0 $((n - 1))); do echo "$NET.$((i + 2)):2101" >>"$dir/hosts"; done
  : >"$dir/pids"
  for i in $(seq 0 $((n - 1))); do
    ip netns exec "${TAG}n$i" "$BIN" run --workers 1 --process "$i" --hosts "$dir/hosts" \
      --peer-timeout-secs 3 "$dir/job.toml" >"$dir/out-$i" 2>"$dir/err-$i" &
    echo $! >>"$dir/pids"
  done
}

# Waits for the processes of the run in $1; fails, with their logs' ends, when one failed.
finish() {
  local status=0
  for pid in $(cat "$1/pids"); do wait "$pid" || status=$?; done
  if [ "$status" -ne 0 ]; then
    tail -n 5 "$1"/err-* >&2
    echo "cluster.sh: a process of $(basename "$1") failed ($status)" >&2
  fi
  return $status
}

now() { date +%s.%N; }
rate() { python3 -c "print(round($EVENTS / ($2 - $1)))"; }

# One process of 3 workers on the machine's own stack.
mkdir -p "$WORK/local"
job_file "$WORK/local" "$EVENTS"
t0=$(now)
"$BIN" run --workers 3 "$WORK/local/job.toml" >/dev/null 2>"$WORK/local/err"
local_eps=$(rate "$t0" "$(now)")

declare -A eps seconds
for n in 1 2 3; do
  mkdir -p "$WORK/p$n"
  job_file "$WORK/p$n" $((EVENTS / n))
  t0=$(now)
  start "$WORK/p$n" "$n"
  finish "$WORK/p$n"
  t1=$(now)
  eps[$n]=$(rate "$t0" "$t1")
  seconds[$n]=$(python3 -c "print($t1 - $t0)")
done

# One process of three killed halfway.
mkdir -p "$WORK/loss"
job_file "$WORK/loss" $((EVENTS / 3))
start "$WORK/loss" 3
half=$(python3 -c "print(${seconds[3]} / 2)")
sleep "$half"
mapfile -t pids <"$WORK/loss/pids"
kill -9 "${pids[1]}"
killed=$(now)
codes=()
for i in 0 2; do
  code=0
  wait "${pids[$i]}" || code=$?
  codes+=("$code")
done
stopped=$(python3 -c "print(round($(now) - $killed, 3))")
wait "${pids[1]}" 2>/dev/null || true
t0=$(now)
start "$WORK/loss" 3
finish "$WORK/loss"
restart=$(python3 -c "print(round($(now) - $t0, 2))")

python3 - "$EVENTS" "$local_eps" "${eps[1]}" "${eps[2]}" "${eps[3]}" "${seconds[3]}" \
  "$stopped" "${codes[*]}" "$restart" "$half" "$KEEP" <<'PY'
import json, sys
events, local, e1, e2, e3, s3, stopped, codes, restart, half = sys.argv[1:11]
print(json.dumps({
    "events": int(events),
    "checkpoints_kept": int(sys.argv[11]),
    "one_process_3_workers_events_per_sec": int(local),
    "namespaced_events_per_sec": {"1": int(e1), "2": int(e2), "3": int(e3)},
    "loss": {
        "killed_at_s": round(float(half), 2),
        "others_stopped_after_s": float(stopped),
        "their_exit_statuses": [int(c) for c in codes.split()],
        "restart_to_end_s": float(restart),
        "uninterrupted_remainder_s": round(float(s3) - float(half), 2),
    },
}))
PY
