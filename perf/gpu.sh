#!/usr/bin/env bash
# The deep trainer's GPU checks, in one go of under 10 minutes, on a CUDA machine that has
# PyTorch 2.11 (cu130), NCCL 2.28 and pyarrow in its python3 but no Rust toolchain:
#   1. the millrace-deep tests that take their CUDA branch there (training on the GPU as on
#      the CPU, mixed precision learning, NCCL with one rank training as the device alone);
#   2. `millrace bench allreduce --backend nccl --ranks 1` beside a copy within the GPU;
#   3. perf/train.sh at batch 4096 on the GPU: millrace (embeddings on the device, and the
#      host-resident table) beside PyTorch eager on the same rows;
#   4. the same with mixed precision on both sides.
#
# Prepare here, where the Rust toolchain and the torch venv are (stripped binaries into
# gpu-bundle/, which git ignores):   perf/gpu.sh --prepare
# Run there, carrying gpu-bundle/:    perf/gpu.sh [--rows N]
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=gpu-bundle

if [ "${1:-}" = "--prepare" ]; then
  . scripts/torch-env.sh
  TARGET="${CARGO_TARGET_DIR:-target}"
  mkdir -p "$BUNDLE"
  cargo build --release -p millrace-engine --features nccl
  cp "$TARGET/release/millrace" "$BUNDLE/millrace"
  tests="$(cargo test --release -p millrace-deep --features nccl --no-run 2>&1 |
    sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p')"
  [ -n "$tests" ] || { echo "no test binary of millrace-deep was built" >&2; exit 1; }
  cp "$tests" "$BUNDLE/deep-tests"
  strip "$BUNDLE/millrace" "$BUNDLE/deep-tests"
  ls -la "$BUNDLE"
  exit 0
fi

ROWS=1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$BUNDLE/millrace" ] || { echo "no $BUNDLE/millrace: run perf/gpu.sh --prepare first" >&2; exit 2; }
python="${PYTHON:-python3}"
torch="$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
site="$(dirname "$torch")"
# libtorch for the binaries; NCCL under the name cudarc looks for (pip ships libnccl.so.2).
links="$(mktemp -d)"
trap 'rm -rf "$links"' EXIT
ln -s "$site/nvidia/nccl/lib/libnccl.so.2" "$links/libnccl.so"
export LIBTORCH="$torch"
export LD_LIBRARY_PATH="$links:$torch/lib:$site/nvidia/nccl/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "== 1. millrace-deep's tests, CUDA branches taken =="
"$BUNDLE/deep-tests" --test-threads 1 nccl on_a_gpu

echo "== 2. NCCL all-reduce, one rank =="
"$BUNDLE/millrace" bench allreduce --backend nccl --ranks 1 --bytes 1M..256M

echo "== 3. training on the GPU beside PyTorch eager, batch 4096 =="
MILLRACE_BIN="$BUNDLE/millrace" MILLRACE_TORCH_PYTHON="$python" \
  perf/train.sh --device cuda --batch 4096 --rows "$ROWS"

echo "== 4. the same in mixed precision (fp16 autocast, loss scaling) on both sides =="
MILLRACE_BIN="$BUNDLE/millrace" MILLRACE_TORCH_PYTHON="$python" \
  perf/train.sh --device cuda --batch 4096 --rows "$ROWS" --mixed-precision
