#!/usr/bin/env bash
# `millrace bench featurize` (FeatureMap fit + transform) on 1M generated rows of the Criteo
# schema (the Criteo spec: 20 quantile buckets and standardization on I1–I13, vocabularies with
# min count 5 on C1–C26) and of the Avazu schema (`examples/avazu.toml`: vocabularies on 21
# columns and a cross), with 1 and 2 workers, each beside `millrace bench bare` on the same
# file in the same run (split, parse the numbers, hash the categories; one thread), and on the
# Criteo sample. First, whether this machine gives two cores' worth: one CPU-bound loop alone,
# then two side by side (the same seconds each means two real cores). One JSON line each.
# Run: perf/featurize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release -p millrace-engine --quiet
bin="$TARGET/release/millrace"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 - <<'PY'
import json, subprocess, sys
loop = "import time; t = time.perf_counter(); sum(i * i for i in range(12_000_000)); print(time.perf_counter() - t)"
run = lambda: subprocess.Popen([sys.executable, "-c", loop], stdout=subprocess.PIPE, text=True)
alone = float(run().communicate()[0])
pair = [run(), run()]
together = [float(p.communicate()[0]) for p in pair]
print(json.dumps({"cores_check": {"alone_seconds": round(alone, 2), "side_by_side_seconds": [round(t, 2) for t in together]}}))
PY

"$bin" gen criteo --rows 1000000 --seed 1 > "$work/criteo.tsv"
"$bin" gen --job examples/avazu.toml --rows 1000000 --seed 1 > "$work/avazu.csv" 2> "$work/avazu.auc"
for schema in criteo avazu; do
  if [ "$schema" = criteo ]; then file="$work/criteo.tsv"; job=(); else file="$work/avazu.csv"; job=(--job examples/avazu.toml); fi
  echo "# $schema, 1M generated rows"
  echo -n '{"bare": '; "$bin" bench bare --input "$file" "${job[@]}" | tr -d '\n'; echo '}'
  for workers in 1 2; do
    "$bin" bench featurize --input "$file" "${job[@]}" --workers "$workers"
  done
done
echo "# criteo-kaggle-dac-head8000/train.tsv"
for workers in 1 2; do
  "$bin" bench featurize --input ../shared/data/criteo-kaggle-dac-head8000/train.tsv --workers "$workers"
done
