#!/usr/bin/env bash
# Runs examples/python's predict.py and load_weights.py (in the test venv) against a registry
# learned from the Criteo sample and `millrace serve`; produce.py runs in
# scripts/embedded-broker-check.sh, against a job's embedded broker.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
BIN="${CARGO_TARGET_DIR:-target}/debug/millrace"
PYTHON="${MILLRACE_INTEROP_PYTHON:-$CACHE/venv-interop/bin/python}"
ADDR=127.0.0.1:18091
work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
"$BIN" bench online --input ../shared/data/criteo-kaggle-dac-head8000/train.tsv --hash-bits 16 \
  --registry "$work/registry" --publish-every 4000 >/dev/null
"$BIN" serve --registry "$work/registry" --bind "$ADDR" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do
  curl -sf "http://$ADDR/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://$ADDR/readyz" >/dev/null || { cat "$work/log"; exit 1; }
"$PYTHON" examples/python/predict.py "http://$ADDR" ctr | tee "$work/predict.txt"
grep -q "both dialects agree" "$work/predict.txt"
"$PYTHON" examples/python/load_weights.py "$work/registry" ctr | tee "$work/weights.txt"
grep -q "'model_kind': 'logistic_regression'" "$work/weights.txt"
echo "python-examples-check: predict.py and load_weights.py ran against a served registry"
