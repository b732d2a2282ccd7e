#!/usr/bin/env bash
# `millrace bench train` beside the same model in PyTorch eager (perf/train_pytorch.py: same
# fields, sizes, initialization, Adam, batch and row order), on the same rows in the same run:
# the bench featurizes the file with the job's FeatureMap and writes the rows it trains on as
# Arrow files, which the peer reads. One JSON line each, then their ratio per model. The host-
# resident embedding table (`--embeddings host`: row-wise AdaGrad on the rows a step gathers)
# runs too, beside the same peer with its embeddings on the device. On the CPU millrace's Adam
# over the embedding table is fused (one pass per element); the peer runs twice, with PyTorch's
# default Adam (the baseline) and with `fused=True`, so that both comparisons are on record.
# Run: perf/train.sh [--rows N] [--batch B] [--device auto|cpu|cuda] [--passes P]
#   [--mixed-precision] (on CUDA: fp16 autocast with loss scaling on both sides)
#   (default: 100k generated rows of the Avazu schema, examples/avazu.toml, batch 2048, CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
ROWS=100000 BATCH=2048 DEVICE=cpu PASSES=1 JOB=examples/avazu.toml INPUT="" OURS_AMP=() PEER_AMP=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --passes) PASSES="$2"; shift 2 ;;
    --job) JOB="$2"; shift 2 ;;
    --input) INPUT="$2"; shift 2 ;;
    --mixed-precision) OURS_AMP=(--mixed-precision); PEER_AMP=(--amp); shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
TARGET="${CARGO_TARGET_DIR:-target}"
bin="${MILLRACE_BIN:-$TARGET/release/millrace}"
python="${MILLRACE_TORCH_PYTHON:-$CACHE/venv-torch/bin/python}"
[ -n "${MILLRACE_BIN:-}" ] || cargo build --release -p millrace-engine --quiet
"$python" -c "import pyarrow, numpy" 2>/dev/null || "$python" -m pip install -q "pyarrow==26.0.1" "numpy==2.3.5"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -z "$INPUT" ]; then
  INPUT="$work/events.csv"
  "$bin" gen --job "$JOB" --rows "$ROWS" --seed 1 >"$INPUT" 2>"$work/gen.log"
fi
for model in deepfm dcnv2; do
  ours="$("$bin" bench train --job "$JOB" --input "$INPUT" --model "$model" --batch "$BATCH" \
    --passes "$PASSES" --device "$DEVICE" --samples "$work/$model" "${OURS_AMP[@]}")"
  peer="$("$python" -W ignore perf/train_pytorch.py --samples "$work/$model" --model "$model" \
    --batch "$BATCH" --passes "$PASSES" --device "$DEVICE" "${PEER_AMP[@]}")"
  fused="$("$python" -W ignore perf/train_pytorch.py --samples "$work/$model" --model "$model" \
    --batch "$BATCH" --passes "$PASSES" --device "$DEVICE" "${PEER_AMP[@]}" --fused)"
  host="$("$bin" bench train --job "$JOB" --input "$INPUT" --model "$model" --batch "$BATCH" \
    --passes "$PASSES" --device "$DEVICE" --embeddings host "${OURS_AMP[@]}")"
  echo "{\"millrace\": $ours}"
  echo "{\"millrace_host\": $host}"
  echo "{\"pytorch\": $peer}"
  echo "{\"pytorch_fused\": $fused}"
  "$python" -c 'import json, sys; a, h, b, f = (json.loads(x) for x in sys.argv[1:5]); print(json.dumps({"model": sys.argv[5], "samples_per_sec_ratio": round(a["samples_per_sec"] / b["samples_per_sec"], 3), "auc_difference": round(a["holdout_auc"] - b["holdout_auc"], 4), "ratio_to_fused": round(a["samples_per_sec"] / f["samples_per_sec"], 3), "host_samples_per_sec_ratio": round(h["samples_per_sec"] / b["samples_per_sec"], 3), "host_auc_difference": round(h["holdout_auc"] - b["holdout_auc"], 4)}))' "$ours" "$host" "$peer" "$fused" "$model"
done
