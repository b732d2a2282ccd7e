#!/usr/bin/env bash
# Checks that Kafka clients outside the process can use `millrace run`'s embedded broker: runs a
# job on `bootstrap_servers = "embedded"`, feeds it from Python's confluent-kafka (in a venv under
# the cache; the lines through examples/python/produce.py), and checks that the job learned every
# line and dead-lettered the bad one. aiokafka produces and reads a record too; kafka-python 3.0
# cannot bootstrap against the embedded broker (librdkafka's mock cluster), which the check
# confirms, as the README says.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
BIN="${CARGO_TARGET_DIR:-target}/debug/millrace"
ROWS=3000
venv="$CACHE/venv-kafka"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "from importlib.metadata import version as v
assert (v('confluent-kafka'), v('aiokafka'), v('kafka-python')) == ('2.16.1', '0.14.0', '3.0.12')" 2>/dev/null \
  || "$venv/bin/pip" install -q "confluent-kafka==2.16.1" "aiokafka==0.14.0" "kafka-python==3.0.12"

work="$(mktemp -d)"
cat >"$work/job.toml" <<TOML
name = "ctr"
[source]
type = "kafka"
bootstrap_servers = "embedded"
topic = "events"
dead_letter_topic = "events-dead-letters"
[features]
type = "hashed"
hash_bits = 16
[learner]
type = "ftrl"
alpha = 0.05
beta = 1.0
l1 = 0.5
l2 = 1.0
[publish]
registry = "$work/registry"
every_events = 1000
every_seconds = 1
[progress]
interval_ms = 0
TOML
"$BIN" run "$work/job.toml" --workers 2 2>"$work/log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
  addr="$(grep -o 'bootstrap_servers=[0-9.:]*' "$work/log" | head -n 1 | cut -d= -f2 || true)"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "embedded broker: no address in the job's log" >&2; cat "$work/log" >&2; exit 1; }
"$venv/bin/python" examples/python/produce.py "$addr" events \
  ../shared/data/criteo-kaggle-dac-head8000/train.tsv --limit "$ROWS"
"$venv/bin/python" scripts/embedded_broker_check.py "$addr" events events-dead-letters
# Every line learned: a version with all of them shows up within a second of the last one.
for _ in $(seq 1 300); do
  grep -qs "\"trained_events\": $ROWS," "$work"/registry/ctr/v*/meta.json && break
  sleep 0.1
done
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" -eq 0 ] || { echo "embedded broker: the job exited with $rc" >&2; cat "$work/log" >&2; exit 1; }
grep -q "learned: $ROWS, model_version: [1-9]" "$work/log" || { echo "embedded broker: the job did not learn $ROWS events" >&2; cat "$work/log" >&2; exit 1; }
echo "embedded broker: the job learned $ROWS events from the python client and published"
