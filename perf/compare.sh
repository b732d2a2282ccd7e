#!/usr/bin/env bash
# millrace's FTRL and factorization machine against Vowpal Wabbit's logistic regression (-b 24, one pass) and River's
# online logistic regression, on the same files in the same run: the Criteo sample and 1M
# generated rows with hashed features, then the Avazu, MovieLens and Frappe files with their
# job files' schemas and FeatureMaps (`bench online --job`); 20% held out at the end. VW and River come from PyPI into a venv in the cache
# (once). One JSON line per tool and input; the table is in perf/RESULTS.md.
# Run: perf/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
TARGET="${CARGO_TARGET_DIR:-target}"
venv="$CACHE/venv-compare"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import vowpalwabbit, river" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "vowpalwabbit==9.11.*" "river==0.26.*"
fi
cargo build --release -p millrace-engine --quiet
bin="$TARGET/release/millrace"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin" gen criteo --rows 1000000 --seed 1 > "$work/gen.tsv"
for input in ../shared/data/criteo-kaggle-dac-head8000/train.tsv "$work/gen.tsv"; do
  echo "# $input"
  for model in ftrl fm; do
    for bits in 20 24; do
      "$bin" bench online --input "$input" --format criteo --holdout 0.2 --model "$model" --hash-bits "$bits"
    done
  done
  "$venv/bin/python" perf/compare.py --input "$input" --holdout 0.2 --bits 24
done
D=../shared/data
for pair in "avazu $D/avazu-ctr-head8999/avazu_train_first8999.csv" \
            "movielens $D/movielens-100k/ml-100k.inter" \
            "frappe $D/frappe-libfm/frappe.validation.libfm"; do
  set -- $pair
  echo "# $2"
  "$bin" bench online --job "examples/$1.toml" --input "$2" --holdout 0.2
  "$venv/bin/python" perf/compare.py --format "$1" --input "$2" --holdout 0.2 --bits 24
done
