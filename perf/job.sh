#!/usr/bin/env bash
# `millrace bench job` with 1, 2 and 4 workers: 1M generated events produced to the test broker
# (tansu on loopback), then the whole job (source → decode → features → FTRL) timed until every
# event is learned. One JSON line per run; then the same on 2 workers with the FeatureMap
# (`--features map`: the bench featurize spec, fitted per epoch in the job).
# Run: perf/job.sh   (after `make test` has built tansu once)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release -p millrace-engine --quiet
scripts/test-broker.sh start
trap 'scripts/test-broker.sh stop' EXIT
for workers in 1 2 4; do
  "$TARGET/release/millrace" bench job --brokers "${MILLRACE_TEST_BROKER:-127.0.0.1:19092}" \
    --rows 1000000 --workers "$workers" 2>/dev/null
done
"$TARGET/release/millrace" bench job --brokers "${MILLRACE_TEST_BROKER:-127.0.0.1:19092}" \
  --rows 1000000 --workers 2 --features map 2>/dev/null
