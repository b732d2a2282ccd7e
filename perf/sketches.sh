#!/usr/bin/env bash
# Quantile sketches for `bucketize` compared on the 13 Criteo integer fields: KLL (ours),
# t-digest, DDSketch and Greenwald–Khanna, each stream split over 2 sketches then merged.
# One JSON line per sketch and input. Run: perf/sketches.sh
set -euo pipefail
cd "$(dirname "$0")/.."
run() { cargo run --release --quiet -p millrace-models --example sketches -- "$@"; }
echo "# 1M generated rows (millrace gen criteo --rows 1000000 --seed 1), 2 parts"
run --rows 1000000 --parts 2
echo "# criteo-kaggle-dac-head8000/train.tsv, 2 parts"
run --input ../shared/data/criteo-kaggle-dac-head8000/train.tsv --parts 2
