#!/usr/bin/env bash
# `millrace bench featurize` (fit + transform of all 39 Criteo fields: 20 quantile buckets and
# standardization on I1–I13, vocabularies with min count 5 on C1–C26) on 1M generated rows and
# on the Criteo sample, with 1 and 2 workers; one JSON line each.
# Run: perf/featurize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release -p millrace-engine --quiet
bin="$TARGET/release/millrace"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$bin" gen criteo --rows 1000000 --seed 1 > "$work/gen.tsv"
for workers in 1 2; do
  echo "# $workers workers, 1M generated rows (millrace gen criteo --rows 1000000 --seed 1)"
  "$bin" bench featurize --input "$work/gen.tsv" --format criteo --workers "$workers"
  echo "# $workers workers, criteo-kaggle-dac-head8000/train.tsv"
  "$bin" bench featurize --input ../shared/data/criteo-kaggle-dac-head8000/train.tsv --format criteo --workers "$workers"
done
