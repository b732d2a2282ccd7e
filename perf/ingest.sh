#!/usr/bin/env bash
# Issue 4's figures, against the test broker (tansu on loopback):
# - `millrace bench ingest`: the Kafka source alone on 2 workers, 1M generated Criteo events
#   (~250 bytes) read into event-time epochs of 200 ms with a RocksDB checkpoint of every epoch;
# - `millrace bench job --checkpoint-ms 0`: the whole job (hashed features, FTRL) checkpointing
#   every epoch, against the same without checkpoints.
# One JSON line per run. Run: perf/ingest.sh   (after `make test` has built tansu once)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
TARGET="${CARGO_TARGET_DIR:-target}"
BROKER="${MILLRACE_TEST_BROKER:-127.0.0.1:19092}"
cargo build --release -p millrace-engine --quiet
scripts/test-broker.sh start
trap 'scripts/test-broker.sh stop' EXIT
"$TARGET/release/millrace" bench ingest --brokers "$BROKER" --rows 1000000 --workers 2 2>/dev/null
"$TARGET/release/millrace" bench job --brokers "$BROKER" --rows 1000000 --workers 2 2>/dev/null
"$TARGET/release/millrace" bench job --brokers "$BROKER" --rows 1000000 --workers 2 \
  --checkpoint-ms 0 2>/dev/null
