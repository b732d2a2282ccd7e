#!/usr/bin/env bash
# Runs examples/python's predict.py and load_weights.py (in the test venv) against a registry
# learned from the Criteo sample and `millrace serve`; produce.py runs in
# scripts/embedded-broker-check.sh, against a job's embedded broker.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
. scripts/served-sample.sh
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
BIN="${CARGO_TARGET_DIR:-target}/debug/millrace"
PYTHON="${MILLRACE_INTEROP_PYTHON:-$CACHE/venv-interop/bin/python}"
ADDR=127.0.0.1:18091
work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
serve_sample "$ADDR"
"$PYTHON" examples/python/predict.py "http://$ADDR" ctr | tee "$work/predict.txt"
grep -q "both dialects agree" "$work/predict.txt"
"$PYTHON" examples/python/load_weights.py "$work/registry" ctr | tee "$work/weights.txt"
grep -q "'model_kind': 'logistic_regression'" "$work/weights.txt"
echo "python-examples-check: predict.py and load_weights.py ran against a served registry"
