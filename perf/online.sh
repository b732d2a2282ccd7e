#!/usr/bin/env bash
# `millrace bench online` with FTRL and with the factorization machine, on the Criteo sample and
# on 1M generated rows; one JSON line each.
# Run: make bench-online   (or perf/online.sh after a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release -p millrace-engine --quiet
bin="$TARGET/release/millrace"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$bin" gen criteo --rows 1000000 --seed 1 > "$work/gen.tsv"
for model in ftrl fm; do
  echo "# $model, criteo-kaggle-dac-head8000/train.tsv"
  "$bin" bench online --input ../shared/data/criteo-kaggle-dac-head8000/train.tsv --format criteo --holdout 0.2 --model "$model"
  echo "# $model, 1M generated rows (millrace gen criteo --rows 1000000 --seed 1)"
  "$bin" bench online --input "$work/gen.tsv" --format criteo --holdout 0.2 --model "$model"
done
